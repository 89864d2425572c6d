"""Argument types shared by the benchmark scripts: every argument checked at parse time, and a
mistake told in one line on stderr (status 2), never a traceback, before any work starts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch

from vae_tutorial.device import pick_device

THREADS = 256  # torch threads: more than any machine here has cores


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block, status 2
        sys.stderr.write(f"{self.prog}: error: {' '.join(message.split())}\n")
        raise SystemExit(2)


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high]."""

    def parse(text: str) -> int:
        if not text.strip().lstrip("-").isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number in [{low}, {high}], got {text!r}"
            )
        return int(text)

    return parse


def ints_in(low: int, high: int) -> Callable[[str], list[int]]:
    """An argparse type: comma-separated whole numbers, each in [low, high]."""
    one = int_in(low, high)
    return lambda text: [one(part) for part in text.split(",")]


def hours(text: str) -> float:
    """An argparse type: a time budget in hours, in (0, 1e4] (over a year is a typo)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1e4:
        raise argparse.ArgumentTypeError(f"expected hours in (0, 10000], got {text!r}")
    return value


def usable_device(text: str) -> torch.device:
    """An argparse type: a device this machine has (`vae_tutorial.device.pick_device`)."""
    try:
        return pick_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
