"""nnInteractive's remote protocol as nninteractive-client 2.6.0 speaks it: paths, headers, what /capabilities says.

Written from the client's source (`nnInteractive/inference/remote/_protocol.py`, `remote_session.py`,
Apache-2.0); nothing of it is imported here: the server must not depend on the client.

Every request but /healthz carries `Authorization: Bearer <key>` when the server has a key (else 401).
`POST /claim` returns a lease token that every later request carries in `X-Lease-Token` (else 410).
JSON bodies are small (`application/json`); arrays travel as NNIA frames (serve.frames) in
`application/octet-stream` bodies, their other arguments JSON in the `X-Meta` header. An error is a
status and `{"detail": "<one line>"}`; the client turns 410 into SessionExpiredError and 503 into
ServerAtCapacityError, and raises httpx's HTTPStatusError for the rest.
"""

from __future__ import annotations

from typing import Any

META_HEADER = "X-Meta"
LEASE_HEADER = "X-Lease-Token"
OCTET_STREAM = "application/octet-stream"

HEALTHZ = "/healthz"
CAPABILITIES = "/capabilities"
CLAIM = "/claim"
RELEASE = "/release"
HEARTBEAT = "/heartbeat"
LEASE_STATUS = "/lease_status"
SET_IMAGE = "/set_image"
SET_TARGET_BUFFER = "/set_target_buffer"
RESET_INTERACTIONS = "/reset_interactions"
UNDO = "/undo"
PREDICT = "/predict"
SET_DO_AUTOZOOM = "/set_do_autozoom"
ADD_BBOX = "/add_bbox_interaction"
ADD_POINT = "/add_point_interaction"
ADD_SCRIBBLE = "/add_scribble_interaction"
ADD_LASSO = "/add_lasso_interaction"
ADD_INITIAL_SEG = "/add_initial_seg_interaction"

# The client version whose protocol this is (the client stores it as INFERENCE_SESSION_VERSION).
PROTOCOL_VERSION = "2.6.0"
LICENSE = "Apache-2.0"  # LiteMedSAM's weights (and EfficientViT-SAM's); shown by the viewers

# Why points, scribbles and lassos are refused (the 400's one line).
BOX_ONLY = "is not supported: this server's models (LiteMedSAM, EfficientViT-SAM) were trained on box prompts only"


class ProtocolError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason (the response's `detail`)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = " ".join(detail.split())  # one line, whatever a message held


def capabilities() -> dict[str, Any]:
    """The /capabilities body. Every interaction is named, true or false: 3D Slicer enables every tool when
    `supported_interactions` is empty. The keys are nnInteractive's (points, bbox2d, bbox3d, scribble, lasso)."""
    return {
        "supported_interactions": {"points": False, "bbox2d": True, "bbox3d": True, "scribble": False,
                                   "lasso": False},
        # The client re-tuples these; nothing here uses channels, they only keep the client's attributes whole.
        "channel_mapping": {"prev_seg": 0, "bbox2d": [1, 2], "bbox3d": [1, 2]},
        "num_interaction_channels": 3,
        "supports_initial_label": True,
        "supports_zero_shot_label_refinement": False,
        "preferred_scribble_thickness": [2, 2, 2],
        "interaction_decay": None,
        "patch_size": None,
        "do_autozoom": False,
        "inference_session_version": PROTOCOL_VERSION,
        "license": LICENSE,
        "supports_undo": True,
    }
