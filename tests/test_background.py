"""tether.background: a generation on a worker thread, polled from a "UI" loop here, against
real servers on the tiny model; and the one table of sentences for failures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import tether
from conftest import Server, free_port
from tether import background

TOKEN = "background-test-token"
SMALL = {"width": 64, "height": 64, "seed": 1}


@pytest.fixture(scope="module")
def busy_server() -> Iterator[str]:
    """A server with a token and room for one waiting job, one job per batch."""
    running = Server("--token", TOKEN, "--max-queue", "1", "--max-batch", "1").wait_serving()
    yield running.address
    running.stop()


def generation(address: str, prompt: str = "a castle", token: str | None = None, **options):
    """The work of a job that generates once and returns the Result."""

    def work(task: background.Task) -> tether.Result:
        with tether.Client(address, token=token) as client:
            return task.generate(client, prompt, **{**SMALL, **options})

    return work


def job_for(work: Any, address: str) -> background.Job:
    return background.Job(work, describe=lambda error: background.describe(error, address))


def poll_until(job: background.Job, condition: Any = None, timeout: float = 60.0) -> list[Any]:
    """Poll as a UI timer would until `condition(events so far)` (default: the job ended)."""
    events: list[Any] = []
    deadline = time.monotonic() + timeout
    while not (job.done if condition is None else condition(events)):
        assert time.monotonic() < deadline, f"timed out; events so far: {events}"
        events += job.poll()
        time.sleep(0.01)
    return events


def kinds(events: list[Any]) -> list[str]:
    return [type(event).__name__ for event in events]


def test_events_come_in_order_queued_progress_with_previews_then_done(server):
    job = job_for(generation(server, steps=3, preview="fast"), server)
    job.start()
    events = poll_until(job)
    assert kinds(events) == ["Queued", "Progress", "Progress", "Progress", "Done"]
    assert [event.step for event in events[1:4]] == [1, 2, 3]
    assert all(event.preview is not None for event in events[1:4])
    result = events[-1].value
    assert isinstance(result, tether.Result) and result.seed == 1
    assert result.image.shape == (64, 64, 3)
    assert job.poll() == [] and job.done


def test_work_can_emit_its_own_events_and_convert_progress():
    def work(task: background.Task) -> str:
        task.emit("checking")
        task.emit("sending")
        return "made"

    job = background.Job(work)
    job.run()  # on this thread, as a test or a blocking script may
    assert job.poll() == ["checking", "sending", background.Done("made")]
    assert job.done


def test_progress_can_be_turned_into_host_events_on_the_worker_thread(server):
    def work(task: background.Task) -> int:
        with tether.Client(server) as client:

            def on_event(event: Any) -> None:
                if isinstance(event, tether.Progress):
                    task.emit(f"step {event.step} of {event.total}")

            return task.generate(client, "a door", on_event=on_event, steps=2, **SMALL).seed

    job = job_for(work, server)
    job.start()
    assert poll_until(job) == ["step 1 of 2", "step 2 of 2", background.Done(1)]


class RecordingClient(tether.Client):
    """A real client that counts requests and can run a hook right after sending one."""

    def __init__(self, address: str, after_send: Any = None) -> None:
        super().__init__(address)
        self.after_send = after_send
        self.sent = 0

    def stream(self, prompt: str, **options: Any) -> tether.Stream:
        stream = super().stream(prompt, **options)
        self.sent += 1
        if self.after_send is not None:
            self.after_send()
        return stream


def test_cancel_before_the_job_starts_sends_nothing(server):
    client = RecordingClient(server)
    job = job_for(lambda task: task.generate(client, "a castle", steps=2, **SMALL), server)
    job.cancel()
    job.start()
    assert poll_until(job) == [background.Stopped()]
    assert client.sent == 0
    client.close()


def test_cancel_while_the_request_is_sent_stops_the_job_before_its_stream_is_known(server):
    """The race of a cancel that comes after the request left but before the job holds
    its stream: the job must still stop it, not run all its steps."""
    jobs: list[background.Job] = []
    client = RecordingClient(server, after_send=lambda: jobs[0].cancel())
    jobs.append(job_for(lambda task: task.generate(client, "a castle", steps=150, **SMALL), server))
    jobs[0].start()
    events = poll_until(jobs[0])
    assert client.sent == 1
    assert events[-1] == background.Stopped()
    assert sum(isinstance(event, tether.Progress) for event in events) < 150
    client.close()
    assert_still_serving(server)


def test_cancel_during_the_generation_stops_it_on_the_server(server):
    job = job_for(generation(server, steps=150), server)
    job.start()
    events = poll_until(job, lambda events: any(isinstance(e, tether.Progress) for e in events))
    job.cancel()
    events += poll_until(job)
    assert events[-1] == background.Stopped()
    steps = [event.step for event in events if isinstance(event, tether.Progress)]
    assert steps[-1] < 150
    assert_still_serving(server)


def assert_still_serving(address: str) -> None:
    job = job_for(generation(address, steps=2), address)
    job.start()
    assert isinstance(poll_until(job)[-1], background.Done)


def failure(work: Any, address: str) -> background.Failed:
    job = job_for(work, address)
    job.start()
    events = poll_until(job)
    assert isinstance(events[-1], background.Failed), events
    return events[-1]


def test_an_unreachable_server_is_named_with_what_to_check():
    address = f"127.0.0.1:{free_port()}"  # bound, then released: nobody listens there
    failed = failure(generation(address, steps=2), address)
    assert failed.code == "UNAVAILABLE"
    assert failed.message.startswith(f"Cannot reach the Tether server at {address}: check")
    assert "the address in the settings" in failed.message


def test_a_wrong_token_says_where_to_set_it(busy_server):
    work = generation(busy_server, token="not-the-token", steps=2)
    job = background.Job(
        work, describe=lambda e: background.describe(e, busy_server, where="the docker")
    )
    job.start()
    [failed] = poll_until(job)
    assert failed == background.Failed(
        f"The Tether server at {busy_server} refused the token: set the right one in the docker",
        "UNAUTHENTICATED",
    )


def test_a_full_queue_says_busy_and_when_to_retry(busy_server):
    running = job_for(generation(busy_server, token=TOKEN, steps=150), busy_server)
    running.start()
    poll_until(running, lambda events: any(isinstance(e, tether.Progress) for e in events))
    waiting = job_for(generation(busy_server, token=TOKEN, steps=2), busy_server)
    waiting.start()
    poll_until(waiting, lambda events: any(isinstance(e, tether.Queued) for e in events))

    refused = failure(generation(busy_server, token=TOKEN, steps=2), busy_server)

    running.cancel()
    waiting.cancel()
    assert poll_until(running)[-1] == background.Stopped()
    assert poll_until(waiting)[-1] == background.Stopped()
    assert refused.code == "RESOURCE_EXHAUSTED"
    assert refused.message.startswith(f"The Tether server at {busy_server} is busy")
    assert "queue is full" in refused.message and "retry" in refused.message
    assert isinstance(poll_until(start(generation(busy_server, token=TOKEN)))[-1], background.Done)


def start(work: Any) -> background.Job:
    job = background.Job(work)
    job.start()
    return job


@pytest.mark.parametrize(
    ("options", "code", "words"),
    [
        ({"steps": 100000}, "INVALID_ARGUMENT", "The Tether server refused the request: steps"),
        ({"width": 60}, "INVALID_ARGUMENT", "The Tether server refused the request: width"),
        ({"model": "no-such-model"}, "NOT_FOUND", "does not have what the request names: model"),
    ],
)
def test_a_refused_request_names_the_field_and_the_server_keeps_serving(
    server, options, code, words
):
    failed = failure(generation(server, **options), server)
    assert failed.code == code
    assert words in failed.message, failed.message
    assert_still_serving(server)


def test_a_user_error_is_shown_as_it_is_without_a_traceback(capsys):
    def work(task: background.Task) -> None:
        raise background.UserError("Select something first.")

    job = background.Job(work)
    job.run()
    assert job.poll() == [background.Failed("Select something first.", "")]
    assert capsys.readouterr().err == ""


def test_a_bug_is_reported_with_its_type_and_its_traceback_kept(capsys):
    def work(task: background.Task) -> None:
        raise ZeroDivisionError("division by zero")

    job = background.Job(work)
    job.run()
    assert job.poll() == [
        background.Failed("Unexpected error: ZeroDivisionError: division by zero", "")
    ]
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        (tether.PermissionDenied("no"), "The Tether server at gpu:1 does not allow this: no"),
        (
            tether.DeadlineExceeded("late"),
            "The Tether server at gpu:1 did not answer in time (late)",
        ),
        # Not asked for by the user: the server dropped the job.
        (tether.Cancelled("draining"), "The Tether server at gpu:1 stopped the job (draining)"),
        (
            tether.Internal("the engine failed: boom"),
            "The Tether server at gpu:1 failed: the engine failed: boom. Its log has the details.",
        ),
        (tether.TetherError("odd"), "The Tether server at gpu:1 failed (UNKNOWN): odd"),
    ],
)
def test_every_other_failure_has_its_sentence(error, sentence):
    assert background.describe(error, "gpu:1") == sentence


def test_without_an_address_the_sentence_leaves_it_out():
    assert background.describe(tether.Internal("x")) == (
        "The Tether server failed: x. Its log has the details."
    )
