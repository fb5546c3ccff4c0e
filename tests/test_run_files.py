"""What an agent made in /dev/shm goes with it, even when it cannot close: the hard exit removes it."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from p2pfl import host_channel, run_files
from p2pfl.host_channel import ChannelInbox, ChannelSender
from p2pfl.shared_slots import MIN_BYTES, SlotWriter, slot_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(monkeypatch):
    """A short folder (a socket's path has at most 107 bytes), as the run's folder under /dev/shm would be."""
    path = Path(tempfile.mkdtemp(prefix="p2pfl-test-"))
    monkeypatch.setattr(host_channel, "RETRY_SECONDS", 0.0)
    yield path
    run_files.remove_all()
    shutil.rmtree(path, ignore_errors=True)


def slot_file(folder: Path) -> SlotWriter:
    writer = SlotWriter(slot_path(folder, 0, 1))
    assert writer.put([memoryview(torch.ones(MIN_BYTES // 4).numpy()).cast("B")]) is not None
    return writer


def test_the_files_left_open_are_removed_and_the_emptied_folder_with_them(folder):
    writer, inbox = slot_file(folder), ChannelInbox(folder, 1, senders=[0])
    sender = ChannelSender(folder, 0, 1)
    assert sender.send([b"hello"])
    made = sorted(path.name for path in folder.iterdir())
    assert made == ["0-1", "0-1.tx", "1.rx"]
    run_files.remove_all()  # a hard exit: nothing was closed
    assert not folder.exists()
    for end in (writer, inbox, sender):
        end.close()  # closing later still works: each finds its file gone


def test_a_closed_end_is_forgotten_and_another_process_s_file_is_left_alone(folder):
    inbox = ChannelInbox(folder, 1, senders=[0])
    inbox.close()
    assert inbox.path not in run_files._made  # closed: nothing of it left for a hard exit to remove
    writer = slot_file(folder)
    replaced = folder / "0-1"
    replaced.unlink()
    replaced.write_bytes(b"a newer agent 0's slots")  # a restarted agent of the same id put its own file there
    run_files.remove_all()
    assert [path.name for path in folder.iterdir()] == ["0-1"]
    writer.close()


def test_an_agent_whose_launcher_is_gone_removes_its_files_when_it_exits_hard(folder):
    """The launcher watch's own path: SIGTERM does nothing here (an agent stuck in its close), so after the grace
    the process exits hard; its slot file and channel socket go first."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    child = textwrap.dedent(f"""
        import signal, sys, time, torch
        from pathlib import Path
        from p2pfl.agents import lifetime
        from p2pfl.host_channel import ChannelInbox
        from p2pfl.shared_slots import MIN_BYTES, SlotWriter, slot_path
        folder = Path({str(folder)!r})
        writer = SlotWriter(slot_path(folder, 0, 1))
        assert writer.put([memoryview(torch.ones(MIN_BYTES // 4).numpy()).cast("B")]) is not None
        inbox = ChannelInbox(folder, 0, senders=[1])
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        lifetime.LAUNCHER_GONE_GRACE_SECONDS = 0.1
        print("made", flush=True)
        lifetime.watch_launcher({gone.pid})
        time.sleep(60)
        sys.exit(0)
    """)
    process = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "made\n"
        assert process.wait(timeout=30) == 143
    finally:
        process.kill()
        process.stdout.close()
    assert not folder.exists()
