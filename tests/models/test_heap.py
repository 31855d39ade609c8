"""The model step's retained heap: freed memory is reused without page faults, then released."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
import torch

from bids_mdd.models.heap import retained_heap

pytestmark = pytest.mark.unit  # make test-fast

BLOCK = 256 * 2**20  # bytes: far above glibc's largest mmap threshold (32 MB)
ROUNDS = 8
FAULTS_PER_BLOCK = BLOCK // 2**21  # at least: one per 2 MiB huge page (else one per 4 KiB)


def _faults_of_a_fresh_block() -> int:
    """Minor page faults while a BLOCK-sized tensor is allocated and written (then freed)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(BLOCK // 4)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del block
    return faults


def _faults_of_blocks(rounds: int = ROUNDS) -> int:
    """Minor page faults of ``rounds`` blocks, one after the other, as a network's passes
    allocate and free their activations."""
    return sum(_faults_of_a_fresh_block() for _ in range(rounds))


def _resident_mib() -> float:
    """VmRSS from /proc (the benchmarks' ``memory.rss_mib``; tests do not import benchmarks)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_freed_blocks_are_reused_inside_and_given_back_after() -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux's /proc to read page faults and resident memory")
    unmapped = _faults_of_blocks()  # glibc's default: every block mapped afresh
    assert unmapped >= ROUNDS * FAULTS_PER_BLOCK
    with retained_heap() as active:
        if not active:
            pytest.skip("the C library is not glibc: retained_heap does nothing")
        # small allocations in between can split a freed block just short of the next one's
        # size, so the heap may grow a few times before the blocks fit: its steady state
        _faults_of_blocks(2 * ROUNDS)
        reused = _faults_of_blocks()
        holding = _resident_mib()  # the freed blocks stay resident, for the next allocation
    released = _resident_mib()
    assert reused < unmapped / 3, (reused, unmapped)
    assert holding - released > 0.75 * BLOCK / 2**20, (holding, released)
    assert _faults_of_blocks() >= ROUNDS * FAULTS_PER_BLOCK  # defaults back: mapped afresh


def test_nested_blocks_keep_the_heap_until_the_outermost_ends() -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux's /proc to read page faults")
    with retained_heap() as active:
        if not active:
            pytest.skip("the C library is not glibc: retained_heap does nothing")
        with retained_heap():
            _faults_of_blocks(3 * ROUNDS)
        inner_ended = _faults_of_blocks()  # still inside the outer block: reused
    after = _faults_of_blocks()
    assert inner_ended < after / 3, (inner_ended, after)
