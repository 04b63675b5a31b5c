"""The yarn shop's traffic: impressions, delayed clicks, drift, bad records, a bot burst.

Shoppers see products and sometimes click within seconds. Their tastes drift (alpaca
grows fashionable over the run), some clicks arrive after the label horizon, a share
of records are broken the ways real apps break them, and for a while bots flood the
shop with impressions that never click: every part of the loop has something to do.

>>> shop = YarnShop(seed=1)
>>> imp = shop.impression(progress=0.0)
>>> sorted(imp.features) == sorted(["price", "category", "hour", "device", "recent_views", "discount"])
True
"""

from __future__ import annotations

import heapq
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from confluent_kafka import Producer

from loopline.contracts import FeatureValue
from loopline.errors import RecordError
from loopline.kafka import producer_config
from loopline.publisher import Publisher
from loopline.settings import Settings

CATEGORIES = ("wool", "cotton", "alpaca", "mohair", "silk", "acrylic", "blend")
DEVICES = ("mobile", "desktop", "tablet")
BASE_APPEAL = {
    "wool": 0.3,
    "cotton": 0.0,
    "alpaca": -0.4,
    "mohair": 0.1,
    "silk": 0.4,
    "acrylic": -0.6,
    "blend": -0.2,
}


@dataclass(frozen=True, slots=True)
class Impression:
    entity_id: str
    features: dict[str, FeatureValue]
    click_probability: float
    clicked: bool
    label_delay: float  # seconds from impression to click


@dataclass
class Shopper:
    favourite: str
    device: str
    views: int = 0


class YarnShop:
    """Deterministic for a seed. ``progress`` in [0, 1] drives the drift."""

    def __init__(self, seed: int = 7, shoppers: int = 2000, bots: int = 400) -> None:
        self.rng = random.Random(seed)
        self.shoppers = [self._shopper() for _ in range(shoppers)]
        # A botnet rotating fake ids: each looks like a busy shopper who never clicks.
        self.bots = [self._shopper() for _ in range(bots)]

    def _shopper(self) -> Shopper:
        return Shopper(self.rng.choice(CATEGORIES), self.rng.choices(DEVICES, (6, 3, 1))[0])

    def impression(self, progress: float, bot: bool = False) -> Impression:
        rng = self.rng
        pool = self.bots if bot else self.shoppers
        index = rng.randrange(len(pool))
        shopper = pool[index]
        category = shopper.favourite if rng.random() < 0.3 else rng.choice(CATEGORIES)
        price = round(math.exp(rng.gauss(3.0, 0.6)), 2)
        price = min(max(price, 0.5), 500.0)
        hour = datetime.now(UTC).hour
        shopper.views = 0 if rng.random() < 0.1 else shopper.views + 1
        discount = rng.random() < 0.15
        appeal = BASE_APPEAL[category] + (1.6 * progress if category == "alpaca" else 0.0)
        logit = (
            -3.0
            + appeal
            + (0.9 if category == shopper.favourite else 0.0)
            - 0.5 * math.log(price / 20)
            + (0.3 if shopper.device == "desktop" else 0.0)
            + (0.6 if discount else 0.0)
            + 0.04 * min(shopper.views, 20)
        )
        probability = 0.0 if bot else 1 / (1 + math.exp(-logit))
        features: dict[str, FeatureValue] = {
            "price": price,
            "category": category,
            "hour": hour,
            "device": shopper.device,
            "recent_views": min(shopper.views, 10_000),
            "discount": discount,
        }
        if rng.random() < 0.05:  # apps do not always know the category
            del features["category"]
        clicked = rng.random() < probability
        delay = rng.expovariate(1 / 8.0) if clicked else 0.0
        entity = f"bot-{index}" if bot else f"user-{index}"
        return Impression(entity, features, probability, clicked, delay)


def broken_record(rng: random.Random, now: datetime, entity_id: str = "user-0") -> bytes:
    """One of the ways apps break records, as raw bytes on the wire (keyed by ``entity_id``)."""
    good: dict[str, Any] = {
        "event_id": f"bad-{rng.getrandbits(64):016x}",
        "entity_id": entity_id,
        "ts": now.isoformat(),
        "features": {"price": 12.0, "hour": now.hour, "device": "mobile"},
        "source": "legacy-app",
        "schema_version": 1,
    }
    kind = rng.randrange(6)
    if kind == 0:
        return b'{"event_id": "broken", "features": {'
    if kind == 1:
        good["features"]["price"] = -4.0
    elif kind == 2:
        good["features"]["colour"] = "red"
    elif kind == 3:
        good["ts"] = (now + timedelta(hours=3)).isoformat()
    elif kind == 4:
        del good["entity_id"]
    else:
        good["features"]["price"] = "twelve"
    return orjson.dumps(good)


@dataclass
class BotWindow:
    """When bots flood the shop, in seconds from the start of the traffic.

    May be set while the traffic runs (it is read on every loop): never, by default.
    """

    start: float = math.inf
    end: float = math.inf

    def schedule(self, start: float, end: float) -> None:
        self.end = end  # before the start: no moment sees a start without its end
        self.start = start


@dataclass
class TrafficReport:
    events: int = 0
    clicks: int = 0
    late_clicks: int = 0
    broken: int = 0
    bot_events: int = 0
    rejected_by_sdk: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, int]:
        return {
            "events published": self.events,
            "clicks published": self.clicks,
            "clicks after the horizon": self.late_clicks,
            "broken records (bypassing the SDK)": self.broken,
            "bot impressions": self.bot_events,
        }


def run_traffic(
    settings: Settings,
    *,
    seconds: float,
    rate: float,
    broken_share: float = 0.02,
    late_share: float = 0.03,
    bot_window: BotWindow | None = None,
    bot_multiplier: float = 5.0,
    seed: int = 7,
    on_tick: Callable[[TrafficReport, float], None] | None = None,
    stop: threading.Event | None = None,
    report: TrafficReport | None = None,
) -> TrafficReport:
    """Publish the shop's traffic in real time for ``seconds`` at ``rate`` events/s.

    Bots flood the shop at ``bot_multiplier`` times the rate during ``bot_window``.
    ``stop`` ends the traffic early; ``report`` (a fresh one by default) is updated as
    it goes, so another thread may watch it.
    """
    shop = YarnShop(seed)
    rng = random.Random(seed + 1)
    report = TrafficReport() if report is None else report
    horizon = settings.load_spec().label.horizon_seconds
    raw = Producer(producer_config(settings))
    pending: list[tuple[float, str, str]] = []  # (due, event_id, entity_id) clicks to publish
    start = time.monotonic()
    next_tick = start + 1.0
    bots = bot_window or BotWindow()
    with Publisher(settings, source="yarn-shop") as pub:
        sent = bots_sent = 0
        while (elapsed := time.monotonic() - start) < seconds and not (stop and stop.is_set()):
            progress = elapsed / seconds
            bot_target = rate * bot_multiplier * max(0.0, min(elapsed, bots.end) - bots.start)
            while sent < rate * elapsed or bots_sent < bot_target:
                bot = bots_sent < bot_target and (sent >= rate * elapsed or rng.random() < 0.5)
                if bot:
                    bots_sent += 1
                else:
                    sent += 1
                now = datetime.now(UTC)
                if not bot and rng.random() < broken_share:
                    entity = f"user-{rng.randrange(len(shop.shoppers))}"
                    record = broken_record(rng, now, entity)
                    raw.produce(settings.topic("events"), record, entity.encode())
                    report.broken += 1
                    continue
                imp = shop.impression(progress, bot=bot)
                try:
                    event_id = pub.event(imp.entity_id, imp.features)
                except RecordError as exc:
                    report.rejected_by_sdk[exc.reason.value] += 1
                    continue
                report.events += 1
                report.bot_events += bot
                if imp.clicked:
                    delay = (
                        horizon * rng.uniform(1.1, 1.5)
                        if rng.random() < late_share
                        else imp.label_delay
                    )
                    report.late_clicks += delay > horizon
                    heapq.heappush(pending, (time.monotonic() + delay, event_id, imp.entity_id))
            while pending and pending[0][0] <= time.monotonic():
                _, event_id, entity_id = heapq.heappop(pending)
                pub.label(event_id, entity_id, 1)
                report.clicks += 1
            raw.poll(0)
            if on_tick is not None and time.monotonic() >= next_tick:
                on_tick(report, elapsed)
                next_tick += 1.0
            time.sleep(0.005)
    undelivered = raw.flush(settings.publish_timeout_seconds)
    report.broken -= undelivered
    return report


class TrafficThread:
    """:func:`run_traffic` in a thread of its own, for a caller that watches it go:
    ``report`` counts as it goes, ``bots`` may be scheduled, :meth:`stop` ends it."""

    def __init__(self, settings: Settings, *, seconds: float, rate: float) -> None:
        self.report = TrafficReport()
        self.bots = BotWindow()
        self.stopped = threading.Event()
        self.failed: Exception | None = None
        self.started = datetime.now(UTC)
        self._settings, self._seconds, self._rate = settings, seconds, rate
        self._thread = threading.Thread(target=self._run, name="yarn-shop", daemon=True)

    def _run(self) -> None:
        try:
            run_traffic(
                self._settings,
                seconds=self._seconds,
                rate=self._rate,
                bot_window=self.bots,
                stop=self.stopped,
                report=self.report,
            )
        except Exception as exc:
            self.failed = exc
            raise

    def start(self) -> None:
        self.started = datetime.now(UTC)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self.stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def elapsed(self) -> float:
        """Seconds since the traffic started."""
        return (datetime.now(UTC) - self.started).total_seconds()

    def at(self, seconds: float) -> datetime:
        """The moment ``seconds`` into the traffic."""
        return self.started + timedelta(seconds=seconds)

    def info(self) -> str:
        r = self.report
        return f"{r.events:,} events · {r.bot_events:,} bots · {r.clicks:,} clicks"
