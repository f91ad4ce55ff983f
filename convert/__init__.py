"""`seg-convert`: real images (DICOM, NIfTI, NRRD, MHA, PNG, JPEG) to challenge cases and label maps back.

A host tool (SimpleITK, scipy), not part of the runtime image. Modules: `io` (reading/writing with
geometry), `intensity` (the challenge's intensity rules), `boxes` (boxes from labels or a file, crop),
`case` (to_case / to_image), `cli` (the console script).
"""
