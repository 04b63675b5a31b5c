"""The prediction service the pusher pushes to."""
