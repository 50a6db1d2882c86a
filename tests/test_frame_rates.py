"""A camera's frame rate as the video runtime measures it (gateway/frame_rates.py), on a
clock the test moves: none before the first frame, the frames over the time since the first
while younger than the window, over the window after, falling to 0 when frames stop, and
measured over the ticks kept when the stream outruns them."""

from __future__ import annotations

from gateway.frame_rates import RateMeter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frames(meter: RateMeter, clock: Clock, count: int, every_s: float) -> None:
    for _ in range(count):
        meter.tick()
        clock.now += every_s


def test_the_rate_over_the_window_from_the_first_frame_on():
    clock = Clock()
    meter = RateMeter(window_s=10.0, clock=clock)
    assert meter.rate() is None
    meter.tick()
    assert meter.rate() == 1.0  # one frame, just in: counted over at least a second
    clock.now += 0.25
    frames(meter, clock, 23, 0.25)  # 4 fps
    assert meter.rate() == 4.0  # 24 frames over the 6 s since the first
    frames(meter, clock, 100, 0.25)
    assert meter.rate() == 4.0  # 40 frames in the last 10 s
    frames(meter, clock, 40, 0.5)
    assert meter.rate() == 2.0  # 2 fps now: the older frames left the window
    clock.now += 10.0
    assert meter.rate() == 0.0  # the stream stopped


def test_a_stream_faster_than_the_ticks_kept_is_measured_over_those_kept():
    clock = Clock()
    meter = RateMeter(window_s=10.0, max_ticks=50, clock=clock)
    frames(meter, clock, 500, 1 / 128)
    assert meter.rate() == 128.0
