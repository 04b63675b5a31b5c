"""Asking serving, as the shop's app would: ``POST /predict`` for a few shoppers."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import httpx

from loopline.settings import Settings
from ops.simulator import YarnShop

FALLBACK, NO_ANSWER = "fallback", "no answer"


@dataclass(frozen=True, slots=True)
class Answer:
    checkpoint_id: str | None  # the model that answered; None for the fallback or no answer
    score: float | None = None
    problem: str | None = None  # why there is no model answer: fallback reason or error

    @property
    def source(self) -> str:
        """The checkpoint that answered, ``fallback``, or ``no answer``."""
        if self.checkpoint_id is not None:
            return self.checkpoint_id
        return FALLBACK if self.score is not None else NO_ANSWER


class ServingProbe:
    def __init__(self, settings: Settings, seed: int = 11) -> None:
        self.url = f"http://{settings.serving_host}:{settings.serving_port}/predict"
        token = settings.serving_token
        headers = {} if token is None else {"Authorization": f"Bearer {token.get_secret_value()}"}
        # Requests a few seconds apart would race uvicorn's 5 s keep-alive: fresh connections.
        self.client = httpx.Client(
            timeout=2.0, headers=headers, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self.shop = YarnShop(seed)
        self.rng = random.Random(seed)

    def close(self) -> None:
        self.client.close()

    def ask(self, entity_id: str | None = None) -> Answer:
        """One prediction for a shopper's impression (a random shopper by default)."""
        impression = self.shop.impression(progress=0.5)
        entity = entity_id or impression.entity_id
        try:
            # A question about a shopper, not an impression shown: no event is logged.
            body = {"entity_id": entity, "features": impression.features, "log": False}
            response = self.client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            return Answer(None, problem=f"not answering ({type(exc).__name__})")
        if response.status_code != 200:
            return Answer(None, problem=f"status {response.status_code}")
        body = response.json()
        score = float(body.get("score", 0.0))
        if body.get("fallback"):
            return Answer(None, score, f"fallback ({body.get('fallback_reason', '?')})")
        return Answer(str(body.get("model_version")), score)

    def sample(self, count: int) -> Counter[str]:
        """Who answered each of ``count`` random shoppers (see :attr:`Answer.source`)."""
        shoppers = len(self.shop.shoppers)
        return Counter(
            self.ask(f"user-{self.rng.randrange(shoppers)}").source for _ in range(count)
        )
