"""seg-serve: a CPU back-end that speaks nnInteractive's remote protocol (nninteractive-client 2.6.0).

napari-nninteractive and SlicerNNInteractive drive their remote back-end through
`nnInteractive.inference.remote.nnInteractiveRemoteInferenceSession`; this package answers that
client with the product's own routing table, models and memory guard (router/, models/), so both viewers
segment by boxes on a CPU. Nothing below this package imports it (docs/architecture.md).

Modules: `protocol` (paths, headers, capabilities, ProtocolError), `frames` (the NNIA packed-array
format, bounded), `boxes` (bbox_coords -> BoxPrompt), `intensity` (raw volumes -> uint8), `leases`
(claim, heartbeat, idle and liveness timeouts), `session` (one viewer's image, target buffer and undo),
`engine` (a box -> the 3D object, on the OpenVINO models), `app` (the ASGI app), `cli` (`seg-serve`).
"""
