"""Frames: the typed outcome of a model operation."""

from __future__ import annotations

import json

from pendra.protocol.frames import (CANCELLED_STATUS, OpDone, OpFailed, OpOutcome, dump_frame,
                                    parse_frame)


def test_the_outcome_of_an_operation_is_typed() -> None:
    """``done`` is succeeded; ``failed`` with CANCELLED_STATUS is cancelled, any other ``failed``
    is failed, whatever its message says."""
    assert OpDone(op_id="op1").outcome is OpOutcome.SUCCEEDED
    assert OpFailed.cancelled("op1").outcome is OpOutcome.CANCELLED
    assert OpFailed(op_id="op1", message="cancelled", status=500).outcome is OpOutcome.FAILED
    assert OpFailed(op_id="op1", message="pull failed", status=502).outcome is OpOutcome.FAILED
    assert OpFailed(op_id="op1", message="stopped by admin",
                    status=CANCELLED_STATUS).outcome is OpOutcome.CANCELLED


def test_a_cancellation_is_the_frame_version_2_peers_already_exchange() -> None:
    """The typed outcome adds no field: a cancellation is the version-2 frame ``failed {message:
    "cancelled", status: 499}`` both ways, so older version-2 peers still interoperate."""
    wire = dump_frame(OpFailed.cancelled("op_1"))
    assert json.loads(wire) == {"type": "failed", "op_id": "op_1", "message": "cancelled",
                                "status": 499}
    old = parse_frame('{"type": "failed", "op_id": "op_1", "message": "cancelled", "status": 499}')
    assert isinstance(old, OpFailed) and old.outcome is OpOutcome.CANCELLED


def test_outcomes_are_the_install_states_of_the_store() -> None:
    """The outcomes are spelled as the terminal install states the store accepts."""
    from pendra.server.store.tables import INSTALL_STATES

    assert {outcome.value for outcome in OpOutcome} <= set(INSTALL_STATES)


def test_version_4_adds_the_complete_kind_and_error_param() -> None:
    """``complete`` is a request kind only peers of version 4 know (``speaks``), and so is the
    multipart-era ``transcribe`` body; the other kinds every version knows. A version-4 error may name the field at fault; one without it (as older
    workers send) parses with no param."""
    from pendra.protocol.frames import (PROTOCOL_VERSION, SUPPORTED_VERSIONS, Error, Request,
                                        parse_frame, speaks)

    assert PROTOCOL_VERSION == 4 and SUPPORTED_VERSIONS == {1, 2, 3, 4}
    assert speaks(4, "complete") and not speaks(3, "complete") and not speaks(1, "complete")
    assert speaks(4, "transcribe") and not speaks(3, "transcribe")
    assert all(speaks(1, kind) for kind in ("chat", "embed", "image"))
    request = Request(id="req_1", kind="complete", model="m", body={"prompt": "p"})
    assert parse_frame(dump_frame(request)) == request
    named = Error(id="req_1", status=400, message="no insert", param="suffix")
    assert parse_frame(dump_frame(named)) == named
    old = parse_frame('{"type":"error","id":"req_1","status":400,"message":"x"}')
    assert isinstance(old, Error) and old.param is None
