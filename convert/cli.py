"""`seg-convert`: `to-case` (an image -> a challenge case) and `to-image` (a label map -> an image).

    seg-convert to-case IMAGE [--labels LABELMAP | --boxes BOXES.json] --modality CT -o DIR
    seg-convert to-image SEGS.npz -o OUT.nii.gz [--reference IMAGE]

IMAGE is anything SimpleITK reads: NIfTI, NRRD, MHA, PNG, JPEG, a DICOM file or a DICOM series folder.
A bad input gets one `error: ...` line, exit status 1, and nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convert.case import to_case, to_image
from convert.intensity import CT_WINDOWS, DEFAULT_CT_WINDOW, parse_window
from convert.io import ConvertError

_PRESETS = ", ".join(f"{name} {level:g}/{width:g}" for name, (level, width) in CT_WINDOWS.items())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-convert", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    case = commands.add_parser("to-case", help="an image (+ labels or boxes) -> a challenge case",
                               description="Write DIR/imgs/<name>.npz (+ DIR/gts/<name>.npz with --labels) and "
                                           "DIR/geometry/<name>.json; <name> is 2DBox_/3DBox_<Modality>_<id>.")
    case.add_argument("image", type=Path, help="image file or DICOM series folder")
    source = case.add_mutually_exclusive_group()
    source.add_argument("--labels", type=Path, help="label map in the image's geometry: one box per label value")
    source.add_argument("--boxes", type=Path,
                        help='JSON: a list of voxel boxes [x0,y0,z0,x1,y1,z1] (2D: [x0,y0,x1,y1]), or '
                             '{"coordinates": "voxel"|"world"|"ras", "boxes": [...]}; world = LPS mm (ITK, '
                             'DICOM), ras = RAS mm (3D Slicer); two opposite corners per box')
    case.add_argument("--modality", required=True, help="CT, MR, PET, US, XRay, Microscopy, ... (case name, routing, "
                                                        "intensity rule)")
    case.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    case.add_argument("--window", default=DEFAULT_CT_WINDOW,
                      help=f"CT window: LEVEL,WIDTH in HU or a preset ({_PRESETS}); default {DEFAULT_CT_WINDOW}")
    case.add_argument("--split-components", action="store_true",
                      help="one box per connected component of each label (26-connected), not one per label")
    case.add_argument("--min-voxels", type=int, default=0,
                      help="drop labels (or components) of fewer voxels (the challenge dropped 3D objects under 100)")
    crop = case.add_mutually_exclusive_group()
    crop.add_argument("--crop", type=int, metavar="MARGIN", help="crop to the boxes grown by MARGIN voxels")
    crop.add_argument("--crop-slices", type=int, metavar="MARGIN",
                      help="crop only z, to the boxes' slices +- MARGIN (as the challenge's 3D cases)")
    case.add_argument("--id", dest="name_id", help="case id (default: from the image's file or folder name)")
    case.add_argument("--series", help="DICOM series UID, when the folder holds several")

    image = commands.add_parser("to-image", help="a case's label map -> an image in the source's full geometry",
                                description="Write the label map (segs, or gts) uncropped, with the source "
                                            "image's origin, direction and spacing, and its label values.")
    image.add_argument("segs", type=Path, help="segs .npz (seg-predict output) or a gts .npz")
    image.add_argument("-o", "--output", type=Path, required=True, help="output image (.nii.gz, .nrrd, .mha, ...)")
    image.add_argument("--reference", type=Path,
                       help="the source image (file or DICOM folder) for the geometry; default: the geometry "
                            "JSON to-case wrote (beside SEGS, or in ../geometry/)")
    image.add_argument("--geometry", type=Path, help="the geometry JSON, if it is elsewhere")
    image.add_argument("--series", help="DICOM series UID of --reference, when the folder holds several")
    return parser


def _join_window(argv: list[str]) -> list[str]:
    """`--window -600,1500` -> `--window=-600,1500`: argparse takes a value starting with '-' for an option."""
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] == "--window" and arg.startswith("-"):
            joined[-1] = f"--window={arg}"
        else:
            joined.append(arg)
    return joined


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_join_window(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "to-case":
            try:
                window = parse_window(args.window)
            except ValueError as error:
                raise ConvertError(str(error)) from error
            written = to_case(args.image, args.output, args.modality, labels_path=args.labels,
                              boxes_path=args.boxes, window=window, split_components=args.split_components,
                              min_voxels=args.min_voxels,
                              crop=args.crop, crop_slices=args.crop_slices, name_id=args.name_id, series=args.series)
            if args.labels is None and args.boxes is None:
                print(f"warning: {written.name}: no --labels or --boxes, so no boxes: its segmentation will be empty",
                      file=sys.stderr)
            print(written.summary)
        else:
            print(to_image(args.segs, args.output, args.reference, args.geometry, args.series))
    except ConvertError as error:
        source = args.image if args.command == "to-case" else args.segs
        message = str(error)  # named once: messages about the input itself already start with its path
        print(f"error: {message}" if message.startswith(str(source)) else f"error: {source}: {message}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
