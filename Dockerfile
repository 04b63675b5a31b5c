# One image for every Loopline worker: `loopline run streams|trainer|pusher|serving`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY loopline loopline
COPY streams streams
COPY trainer trainer
COPY pusher pusher
COPY serving serving
COPY ops ops
COPY feature_repo feature_repo
RUN pip install . && useradd --create-home loopline && mkdir -p /data && chown loopline /data
USER loopline
ENV LOOPLINE_STATE_DIR=/data/state LOOPLINE_CHECKPOINT_DIR=/data/checkpoints
ENTRYPOINT ["loopline"]
CMD ["--help"]
