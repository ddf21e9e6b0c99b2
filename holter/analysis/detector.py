"""A streaming anomaly detector for one series: one point in, one score in [0, 1] out.

``Detector().update(timestamp, value)`` costs O(1) time (about 5-10 µs in CPython) and a
bounded amount of memory (about 4 kB with its seasonal profiles), whatever the length of
the series. It needs nothing but the points, uses the same settings for every series,
and never looks ahead (it is causal: a point's score depends on earlier points only).

How it judges a point
---------------------
1. **Expected value.** Two predictors run side by side. The *local* one is a fast,
   robust (Huber-clipped) exponentially weighted level. The *seasonal* one is a
   time-of-day profile (5-minute bins, or the sampling step when coarser) plus a fast
   level of the de-seasonalised series; from the second week an hour-of-week
   correction is added where it helps (weekends, rush hours). Whichever predicted
   better over about the last day (squared errors, clipped: the misses that would
   raise false alarms weigh most) gives the expected value.
2. **Scale.** Residuals are divided by a robust scale (mean absolute error with clipped
   updates), kept per time-of-day (or hour-of-week) bin when seasonality is in use, with
   a floor so that constant series and sparse spikes stay finite.
3. **Three statistics** of the standardised residual ``z``: the point itself (spikes
   and dips), the fast level against a slower one (level shifts and drifts) and a
   short mean of ``|z|`` (variance changes).
4. **Rarity, learnt per series.** Each statistic's upper tail is modelled streaming:
   peaks over a tracked 95th percentile with an exponential tail (streaming POT), on
   log-compressed values. The surprise is ``-log10 p`` of the most surprising
   statistic, corrected for the three tests. A series that is always spiky learns that
   its spikes are normal; a quiet one flags small changes. The tails' memory grows
   from 10 exceedances to 100 (about 2,000 points), so what an immature model taught
   during the cold start fades within days.
5. **Score** = surprise / 10, clipped to [0, 1]: 0.4 means about one point in 10^4 of
   the series' own history deviates this much, 0.6 one in 10^6. A point that only
   continues an event (not 20 % more surprising than the last onset, whose level fades
   by 1 % a point) has its score damped to 30 %: one event, one high score.

Cold start and adaptation (see README "Anomaly detection")
----------------------------------------------------------
* The first :data:`WARM_POINTS` points are ``warming``: score 0, no judgement. The
  baseline then starts from their median and median absolute deviation (robust).
* Until a full day has been seen the series is ``learning`` (local baseline); then
  ``mature``. A daily pattern is used from the second day on, once it predicts better
  than the local baseline; a weekly correction from the second week on.
* A level shift is scored at once; after :data:`SHIFT_POINTS` consecutive points more
  than 3 scales off on the same side, the new level is accepted as normal. Smaller
  shifts are absorbed by the fast level within about 10 points.
* The scale adapts by up to ~6 % a point upwards (a tenfold increase in noise is
  absorbed in about 100 points) and has a time constant of 100 points.

Bad input never raises: NaN, infinities and non-numbers are ignored (counted in
:attr:`Detector.skipped`), huge values are clamped, timestamps that go backwards are
taken as "now", and every score is finite.
"""

from __future__ import annotations

import itertools
import math
import struct
from array import array
from typing import Any, NamedTuple

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
WARM_POINTS = 20
"""Points a new series needs before it is judged (``warming`` until then)."""
SHIFT_POINTS = 5
"""Consecutive points beyond the band, on one side, after which a new level is accepted."""
ANOMALY_SCORE = 0.4
"""The score from which an anomaly is recorded (severity ``low``)."""
CONTINUE_SCORE = 0.3
"""An anomalous event goes on while its points' undamped scores stay at or above this; the
band of normal values is where a point would score less than this on its own."""

_isfinite = math.isfinite
_LN10 = math.log(10.0)
_LOG10_3 = math.log10(3.0)
_MAX_ABS = 1e300  # values are clamped here so that no arithmetic overflows
_MAX_X = 700.0  # cap of a log-compressed statistic (exp(700) is still a float)
_TAU = 0.95  # the tracked quantile above which tails are modelled
_P0 = -math.log10(1.0 - _TAU)
_BETA_FLOOR = (0.1, 0.1, 0.02)  # tail scale floors: the statistics are discrete at worst
_BETA_MEMORY = 100  # exceedances (about 2,000 points), reached after 270 of them
_MIN_TAIL_N = 10
_FAST = 0.3  # fast level
_SCALE_RATE = 0.01  # robust scale: time constant of 100 points
_MID = 0.02  # the slower level the fast one is compared with: about 50 points
_VAR_RATE = 0.1  # mean of |r|: about the last 10-20 points
_HUBER = 4.0
_ONSET_MARGIN = 1.2
_ONSET_DECAY = 0.99
_DAMP = 0.3
_SLOW_S = 15_000.0  # slow level: about 4 hours
_DAILY_MIN_RATE = 0.2  # profile memory: about 5 visits (days)
_WEEKLY_MIN_RATE = 0.3  # about 3 weeks
_STATE_VERSION = 1
_MAGIC = b"HDT1"
_HEAD = struct.Struct("<B q q q i i i i i 5d 13d " + "dd q q " * 3)

KINDS = ("spike", "dip", "level_shift", "trend_change", "variance_change")
"""What an anomalous point (or event, :func:`holter.analysis.anomaly.event_kind`) looks like."""
MATURITIES = ("warming", "learning", "mature")
"""``warming``: too few points to judge; ``learning``: judged against a local baseline,
seasonality not known yet; ``mature``: at least a day of history."""


class Observation(NamedTuple):
    """One judged point: what was expected, how unusual the value was, and why.

    ``low``/``high`` bound the band of normal values (None while warming); ``score`` is in
    [0, 1]; ``kind`` is one of :data:`KINDS` (None for a point within the band);
    ``onset`` is True when the point starts or raises an event rather than continuing
    one (continuations have damped scores); ``raw_score`` is the score before damping;
    ``z`` the deviation from the expected value in robust scales (positive: above).
    """

    timestamp: float
    value: float
    expected: float | None
    low: float | None
    high: float | None
    score: float
    kind: str | None
    maturity: str
    seasonality: str
    onset: bool
    raw_score: float
    z: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return self._asdict()


class Detector:
    """Streaming anomaly detector for one series; see the module documentation.

    ``probationary_rows`` is accepted for the NAB scorer's factory protocol and not
    needed: the detector decides by itself when it has seen enough.
    """

    __slots__ = (
        "_alt",
        "_buf",
        "_dg",
        "_h",
        "_level",
        "_lmid",
        "_m",
        "_mae_d",
        "_mae_l",
        "_mae_w",
        "_nsel",
        "_onset",
        "_pred",
        "_r",
        "_run",
        "_se",
        "_slow",
        "_surprises",
        "_tails",
        "_ulevel",
        "_umid",
        "_v",
        "bin_s",
        "daily",
        "daily_n",
        "daily_scale",
        "n",
        "raw_score",
        "skipped",
        "step_s",
        "t_first",
        "t_last",
        "week_bin_s",
        "weekly",
        "weekly_n",
        "weekly_scale",
    )

    def __init__(self, probationary_rows: int | None = None) -> None:
        self.n = 0
        self.skipped = 0
        self.raw_score = 0.0
        """Score of the last point before damping (continuations of an event included)."""
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.step_s = 0.0
        self.bin_s = 0.0
        self.week_bin_s = 0.0
        self._buf: list[tuple[float, float]] | None = []
        self.daily: array[float] | None = None
        self.daily_n: array[int] | None = None
        self.daily_scale: array[float] | None = None
        self.weekly: array[float] | None = None
        self.weekly_n: array[int] | None = None
        self.weekly_scale: array[float] | None = None
        self._level = self._ulevel = self._slow = 0.0
        self._se = self._dg = 1.0
        self._mae_l = self._mae_d = self._mae_w = 0.0
        self._nsel = 0
        self._m = 0.0
        self._v = 1.0
        self._run = 0
        self._alt = 0
        self._lmid = self._umid = 0.0
        self._h = 0.0
        # tails: per statistic [u, beta, n, n_exceedances]
        self._tails = [[0.0, 0.0, 0, 0], [0.0, 0.0, 0, 0], [0.0, 0.0, 0, 0]]
        self._pred = math.nan
        self._r = 0.0
        self._surprises = (0.0, 0.0, 0.0)
        self._onset = False

    # -- public ------------------------------------------------------------------------

    @property
    def maturity(self) -> str:
        """``warming``, ``learning`` or ``mature`` (see :data:`MATURITIES`)."""
        if self._buf is not None:
            return "warming"
        if self.t_first is not None and self.t_last is not None and (
            self.t_last - self.t_first >= DAY_S or self.daily is None
        ):
            return "mature"
        return "learning"

    @property
    def seasonality(self) -> str:
        """``none``, ``daily`` or ``weekly``: the profile the expected value uses now."""
        if self._buf is not None or self.daily is None or not self._daily_ready():
            return "none"
        if self._mae_d >= self._mae_l:
            return "none"
        if self.weekly is not None and self._mae_w < self._mae_d and self._weekly_ready():
            return "weekly"
        return "daily"

    def update(self, timestamp: float, value: float) -> float:
        """Feed one point (epoch seconds, value); return its anomaly score in [0, 1]."""
        try:
            t = float(timestamp)
            y = float(value)
        except (TypeError, ValueError):
            self.skipped += 1
            return 0.0
        if not (_isfinite(y) and _isfinite(t)):
            self.skipped += 1
            return 0.0
        if not -_MAX_ABS <= y <= _MAX_ABS:
            y = _MAX_ABS if y > 0 else -_MAX_ABS
        if self.t_last is not None and t < self.t_last:
            t = self.t_last  # out of order: judged as if it came now
        self.n += 1
        if self.t_first is None:
            self.t_first = t
        self.t_last = t
        if self._buf is not None:
            self._pred = math.nan
            self.raw_score = 0.0
            self._buf.append((t, y))
            if len(self._buf) >= WARM_POINTS:
                self._start()
            return 0.0
        return self._step(t, y)

    def observe(self, timestamp: float, value: float) -> Observation:
        """Like :meth:`update`, returning the whole judgement of the point."""
        score = self.update(timestamp, value)
        t = self.t_last if self.t_last is not None else 0.0
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        pred = self._pred
        if math.isnan(pred):
            return Observation(t, v, None, None, None, 0.0, None, self.maturity,
                               self.seasonality, False, 0.0)
        half = self.band_width()
        raw = self.raw_score
        kind = self.kind() if raw >= CONTINUE_SCORE else None
        return Observation(t, v, pred, pred - half, pred + half, score, kind, self.maturity,
                           self.seasonality, self._onset, raw, self._r)

    def band_width(self) -> float:
        """Half-width of the band of normal values around the expected value, now."""
        u, beta, n, _ = self._tails[0]
        if n < _MIN_TAIL_N:
            return 3.0 * self._se
        beta = max(beta, _BETA_FLOOR[0])
        x = u + max(CONTINUE_SCORE * 10.0 + _LOG10_3 - _P0, 0.0) * beta * _LN10
        return self._se * math.expm1(min(x, _MAX_X))

    def kind(self) -> str | None:
        """The kind of the last point's deviation (see :data:`KINDS`).

        Several points in a row beyond 3 scales on one side: a level shift; on both
        sides: a change of variance; this point alone: a spike or a dip; otherwise the
        statistic that found it: the short mean of ``|r|`` (variance change) or the fast
        level drifting from the slower one (trend change).
        """
        s1, s2, s3 = self._surprises
        if s1 <= 0 and s2 <= 0 and s3 <= 0:
            return None
        if abs(self._run) >= 3:
            return "level_shift"
        if self._alt >= 2 and abs(self._run) < self._alt:
            return "variance_change"
        if abs(self._r) > 3.0:
            return "spike" if self._r > 0 else "dip"
        if s1 >= s2 and s1 >= s3:
            return "spike" if self._r > 0 else "dip"
        return "trend_change" if s2 >= s3 else "variance_change"

    def expected(self, timestamp: float) -> float | None:
        """The value the detector would expect at ``timestamp`` (None while warming)."""
        if self._buf is not None:
            return None
        t = float(timestamp)
        pred_l = self._level
        best = pred_l
        if self.daily is not None and self._mae_d < self._mae_l:
            b = int(t % DAY_S // self.bin_s) % len(self.daily)
            if self.daily_n[b]:  # type: ignore[index]
                best = self.daily[b] + self._ulevel
                if self.weekly is not None and self._mae_w < self._mae_d:
                    w = int(t % WEEK_S // self.week_bin_s) % len(self.weekly)
                    if self.weekly_n[w]:  # type: ignore[index]
                        best += self.weekly[w]
        return best

    # -- the algorithm -----------------------------------------------------------------

    def _start(self) -> None:
        buf = self._buf or []
        values = sorted(y for _, y in buf)
        mid = _median(values)
        mad = _median(sorted(abs(y - mid) for y in values)) * 1.4826
        spread = values[-1] - values[0]
        scale = max(mad, 0.05 * spread, 1e-9 * abs(mid), 1e-12)
        gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(buf) if b[0] > a[0])
        self.step_s = _median(gaps) if gaps else 1.0
        self._level = self._ulevel = self._slow = self._lmid = self._umid = mid
        self._se = scale
        self._dg = scale
        if self.step_s <= DAY_S / 12:  # at least 12 points a day: daily profile
            self.bin_s = max(self.step_s, 300.0)
            bins = max(1, round(DAY_S / self.bin_s))
            self.bin_s = DAY_S / bins
            self.daily = array("f", bytes(4 * bins))
            self.daily_n = array("H", bytes(2 * bins))
            self.daily_scale = array("f", bytes(4 * bins))
        if self.step_s <= WEEK_S / 28:
            self.week_bin_s = max(self.step_s, 3600.0)
            bins = max(1, round(WEEK_S / self.week_bin_s))
            self.week_bin_s = WEEK_S / bins
            self.weekly = array("f", bytes(4 * bins))
            self.weekly_n = array("H", bytes(2 * bins))
            self.weekly_scale = array("f", bytes(4 * bins))
        self._buf = None

    def _daily_ready(self) -> bool:
        return self.t_last is not None and self.t_first is not None and (
            self.t_last - self.t_first >= DAY_S
        )

    def _weekly_ready(self) -> bool:
        return self.t_last is not None and self.t_first is not None and (
            self.t_last - self.t_first >= WEEK_S
        )

    def _step(self, t: float, y: float) -> float:
        sig = self._se
        level = self._level
        e_l = y - level
        e = e_l
        use = 0
        daily = self.daily
        b = w = -1
        kd = 0
        sd = sw = 0.0
        e_d = e_w = 0.0
        if daily is not None:
            b = int(t % DAY_S // self.bin_s) % len(daily)
            kd = self.daily_n[b]  # type: ignore[index]
            sd = daily[b]
            weekly = self.weekly
            if weekly is not None:
                w = int(t % WEEK_S // self.week_bin_s) % len(weekly)
                if self.weekly_n[w]:  # type: ignore[index]
                    sw = weekly[w]
            if kd:
                e_d = y - (self._ulevel + sd)
                e_w = e_d - sw
                if self._mae_d < self._mae_l and self._daily_ready():
                    use = 1
                    e = e_d
                    if sw and self._mae_w < self._mae_d and self._weekly_ready():
                        use = 2
                        e = e_w
        # scale: global, or per time-of-day bin when the seasonal model is in use
        se = sig
        if use:
            sb = (self.weekly_scale[w] if use == 2 else self.daily_scale[b])  # type: ignore[index]
            if sb > 0.0:
                se = sb if sb > 0.25 * sig else 0.25 * sig
        floor = 0.02 * self._dg + 1e-9 * abs(level) + 1e-12
        se = max(se, floor)
        self._pred = y - e
        r = e / se
        ar = abs(r)
        x1 = math.log1p(ar) if ar < 1e300 else _MAX_X
        x1 = min(x1, _MAX_X)
        # level shifts and drifts: the fast level against a slower one, in scales
        m = ((self._ulevel - self._umid) if use else (level - self._lmid)) / se
        self._m = m
        am = abs(m)
        x2 = math.log1p(am) if am < 1e300 else _MAX_X
        x2 = min(x2, _MAX_X)
        v = self._v + _VAR_RATE * ((ar if ar < 10.0 else 10.0) - self._v)
        self._v = v
        self._r = r
        tails = self._tails
        s1 = _surprise(tails[0], x1, _BETA_FLOOR[0])
        s2 = _surprise(tails[1], x2, _BETA_FLOOR[1])
        s3 = _surprise(tails[2], v, _BETA_FLOOR[2])
        self._surprises = (s1, s2, s3)
        s = s1 if s1 > s2 else s2
        s = max(s, s3)
        score = (s - _LOG10_3) / 10.0
        score = 0.0 if score < 0.0 else 1.0 if score > 1.0 else score
        # every point teaches the tails, anomalous ones too: what keeps recurring becomes
        # normal (on NAB, learning only from calm points costs far more false alarms)
        _learn(tails[0], x1)
        _learn(tails[1], x2)
        _learn(tails[2], v)
        # level shifts: a run of points beyond 3 scales on one side re-anchors the level
        if x1 > 1.386:
            self._run = self._run + 1 if (r > 0) == (self._run > 0) else (1 if r > 0 else -1)
            self._alt += 1
        else:
            self._run = 0
            self._alt = 0
        # -- learning --
        ae = abs(e)
        c = _HUBER * sig
        big = 6.0 * sig
        new_sig = sig + _SCALE_RATE * ((ae if ae < big else big) * 1.25 - sig)
        self._se = new_sig if new_sig > 1e-12 else 1e-12
        cap = 50.0 * self._dg + sig
        self._dg += 0.01 * ((ae if ae < cap else cap) - self._dg)
        self._level = level + _FAST * (e_l if -c <= e_l <= c else (c if e_l > 0 else -c))
        em = e_l + level - self._lmid
        cm = 10.0 * c
        self._lmid += _MID * (em if -cm <= em <= cm else (cm if em > 0 else -cm))
        if daily is None:
            return self._emit(score)
        step = self.step_s
        if kd:
            # the models are compared on the same points, over about a day, by squared
            # (clipped) errors: the misses that would raise false alarms weigh most
            nsel = self._nsel + 1
            self._nsel = nsel
            rate = 1.0 / nsel
            day_rate = step / DAY_S
            rate = max(rate, day_rate)
            self._mae_l += rate * (_sq(e_l, sig) - self._mae_l)
            self._mae_d += rate * (_sq(e_d, sig) - self._mae_d)
            self._mae_w += rate * (_sq(e_w, sig) - self._mae_w)
            per_visit = self.bin_s / step if self.bin_s > step else 1.0
            ds = self.daily_scale  # type: ignore[assignment]
            rate = 1.0 / kd if kd * _DAILY_MIN_RATE < per_visit else _DAILY_MIN_RATE / per_visit
            aed = abs(e_d)
            cs = 6.0 * se
            ds[b] += rate * ((aed if aed < cs else cs) * 1.25 - ds[b])  # type: ignore[index]
        u = y - sd
        eu = u - self._ulevel
        self._ulevel += _FAST * (eu if -c <= eu <= c else (c if eu > 0 else -c))
        em = u - self._umid
        cm = 10.0 * c
        self._umid += _MID * (em if -cm <= em <= cm else (cm if em > 0 else -cm))
        # the slow level separates within-day shape (the profile) from day-to-day level
        es = u - self._slow
        cs = 10.0 * c
        rate = step / _SLOW_S if step < _SLOW_S else 1.0
        self._slow += rate * (es if -cs <= es <= cs else (cs if es > 0 else -cs))
        if kd < 65535:
            kd += 1
            self.daily_n[b] = kd  # type: ignore[index]
        per_visit = self.bin_s / step if self.bin_s > step else 1.0
        rate = 1.0 / kd if kd * _DAILY_MIN_RATE < per_visit else _DAILY_MIN_RATE / per_visit
        daily[b] = sd + rate * ((y - self._slow) - sd)
        if w >= 0 and kd > 1:
            # the hour-of-week profile learns what the daily model leaves unexplained
            weekly = self.weekly  # type: ignore[assignment]
            kw = self.weekly_n[w]  # type: ignore[index]
            if kw < 65535:
                kw += 1
                self.weekly_n[w] = kw  # type: ignore[index]
            per_visit = self.week_bin_s / step if self.week_bin_s > step else 1.0
            rate = 1.0 / kw if kw * _WEEKLY_MIN_RATE < per_visit else _WEEKLY_MIN_RATE / per_visit
            dw = e_d - sw
            weekly[w] = sw + rate * (dw if -c <= dw <= c else (c if dw > 0 else -c))  # type: ignore[index]
            if kw > 1:
                ws = self.weekly_scale  # type: ignore[assignment]
                aew = abs(e_w)
                cs = 6.0 * se
                ws[w] += rate * ((aew if aew < cs else cs) * 1.25 - ws[w])  # type: ignore[index]
        if abs(self._run) >= SHIFT_POINTS:
            self._reanchor(y, sd)
        return self._emit(score)

    def _emit(self, score: float) -> float:
        """One event, one high score: damp points that only continue an event."""
        self.raw_score = score
        self._onset = score > self._h * _ONSET_MARGIN
        if self._onset:
            self._h = score
        else:
            score *= _DAMP
        self._h *= _ONSET_DECAY
        return score

    def _reanchor(self, y: float, sd: float) -> None:
        """Accept a persistent shift as the new normal."""
        self._level = self._lmid = y
        self._ulevel = self._slow = self._umid = y - sd
        self._m = 0.0
        self._run = 0
        self._alt = 0

    # -- persistence -------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The detector's whole state, compact (about 4 kB), for :meth:`from_bytes`.

        Little-endian: magic, a fixed header of numbers, the warm-up points (while
        warming), then the seasonal profiles as float32/uint16 arrays.
        """
        t_first = self.t_first if self.t_first is not None else math.nan
        t_last = self.t_last if self.t_last is not None else math.nan
        tails = [x for tail in self._tails for x in tail]
        buf = self._buf
        head = _HEAD.pack(
            _STATE_VERSION, self.n, self.skipped, self._nsel, self._run, self._alt,
            len(buf) if buf is not None else -1,
            len(self.daily) if self.daily is not None else 0,
            len(self.weekly) if self.weekly is not None else 0,
            t_first, t_last, self.step_s, self.bin_s, self.week_bin_s,
            self._level, self._ulevel, self._slow, self._se, self._dg, self._mae_l,
            self._mae_d, self._mae_w, self._m, self._v, self._h, self._lmid, self._umid, *tails,
        )
        parts = [_MAGIC, head]
        if buf:
            parts.append(array("d", [x for point in buf for x in point]).tobytes())
        for arr in (self.daily, self.daily_n, self.daily_scale, self.weekly, self.weekly_n,
                    self.weekly_scale):
            if arr is not None:
                parts.append(arr.tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Detector:
        """Rebuild a detector saved by :meth:`to_bytes`; ValueError if ``data`` is not one."""
        if not isinstance(data, bytes | bytearray | memoryview) or bytes(data[:4]) != _MAGIC:
            raise ValueError("not a holter detector state (bad magic bytes)")
        data = bytes(data)
        try:
            fields = _HEAD.unpack_from(data, 4)
        except struct.error as exc:
            raise ValueError(f"corrupt detector state: {exc}") from None
        if fields[0] != _STATE_VERSION:
            raise ValueError(f"detector state version {fields[0]} is not supported")
        n, skipped, nsel, run, alt, n_buf, n_daily, n_weekly = fields[1:9]
        det = cls()
        det.n, det.skipped, det._nsel, det._run, det._alt = n, skipped, nsel, run, alt
        t_first, t_last, det.step_s, det.bin_s, det.week_bin_s = fields[9:14]
        det.t_first = None if math.isnan(t_first) else t_first
        det.t_last = None if math.isnan(t_last) else t_last
        (det._level, det._ulevel, det._slow, det._se, det._dg, det._mae_l, det._mae_d,
         det._mae_w, det._m, det._v, det._h, det._lmid, det._umid) = fields[14:27]
        tails = fields[27:]
        det._tails = [[tails[i], tails[i + 1], int(tails[i + 2]), int(tails[i + 3])]
                      for i in range(0, 12, 4)]
        pos = 4 + _HEAD.size
        if n_buf >= 0:
            flat = _array("d", data[pos:pos + 16 * n_buf], 2 * n_buf)
            det._buf = [(flat[i], flat[i + 1]) for i in range(0, 2 * n_buf, 2)]
            pos += 16 * n_buf
        else:
            det._buf = None
        for name, code, size, length in (
            ("daily", "f", 4, n_daily), ("daily_n", "H", 2, n_daily),
            ("daily_scale", "f", 4, n_daily), ("weekly", "f", 4, n_weekly),
            ("weekly_n", "H", 2, n_weekly), ("weekly_scale", "f", 4, n_weekly),
        ):
            if length:
                setattr(det, name, _array(code, data[pos:pos + size * length], length))
                pos += size * length
        if pos != len(data):
            raise ValueError(f"corrupt detector state: {len(data) - pos} bytes left over")
        return det

    def __repr__(self) -> str:
        return (f"Detector(n={self.n}, maturity={self.maturity!r}, "
                f"seasonality={self.seasonality!r})")


def _array(code: str, data: bytes, length: int) -> array[Any]:
    out = array(code)
    out.frombytes(data)
    if len(out) != length:
        raise ValueError(f"detector state array has {len(out)} items, expected {length}")
    return out


def _sq(err: float, sig: float) -> float:
    """Squared error in units of the scale, clipped at 6 scales (times the scale)."""
    a = err if err >= 0.0 else -err
    return a * a / sig if a < 6.0 * sig else 36.0 * sig


def _median(values: list[float]) -> float:
    n = len(values)
    if not n:
        return 0.0
    mid = n // 2
    return values[mid] if n % 2 else 0.5 * (values[mid - 1] + values[mid])


def _surprise(tail: list[Any], x: float, beta_floor: float) -> float:
    """``-log10 P(X >= x)`` under the tail model (0 until it has seen a few values)."""
    u, beta, n, _ = tail
    if n < _MIN_TAIL_N:
        return 0.0
    if x <= u:
        return _P0 * x / u if u > 0.0 else 0.0
    beta = max(beta, beta_floor)
    return _P0 + (x - u) / (beta * _LN10)


def _learn(tail: list[Any], x: float) -> None:
    """Track the 95th percentile (stochastic approximation) and the mean excess over it."""
    u, beta, n, k = tail
    n += 1
    tail[2] = n
    if n == 1:
        tail[0] = x
        tail[1] = 0.5 * x + 1e-12
        return
    eta = 0.1 * (beta if beta > 1e-12 else 1e-12)
    if x > u:
        k += 1
        tail[3] = k
        tail[0] = u + eta * _TAU
        # the memory grows with experience, from 10 exceedances to _BETA_MEMORY: what
        # the cold start taught (an immature model's large residuals) fades in days
        memory = 10.0 + k / 3.0
        memory = min(memory, _BETA_MEMORY)
        rate = 1.0 / k if k < memory else 1.0 / memory
        tail[1] = beta + rate * ((x - u) - beta)
    else:
        tail[0] = u - eta * (1.0 - _TAU)


__all__ = ["ANOMALY_SCORE", "CONTINUE_SCORE", "KINDS", "MATURITIES", "SHIFT_POINTS",
           "WARM_POINTS", "Detector", "Observation"]
