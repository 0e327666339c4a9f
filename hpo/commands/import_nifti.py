"""``python -m hpo.run import-nifti``: NIfTI image and label volumes into a PNG dataset folder.

The conversion lives in :mod:`lgeseg.nifti` (Ray-free); this module only parses the options.
"""

from __future__ import annotations

import argparse

from . import percentiles


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``import-nifti`` subcommand."""
    parser = subparsers.add_parser(
        "import-nifti",
        help="convert NIfTI image/label volumes into a dataset folder (PNG slices)",
        description="Read NIfTI image and label volumes with nibabel, pair them by case id (the text the "
        "first wildcard of each pattern matched; it becomes the patient), and write one image "
        "and one mask PNG per slice, manifest.csv (file, patient, slice) and dataset.json.",
    )
    parser.add_argument("source", help="folder the --images and --labels patterns are relative to")
    parser.add_argument("--out", required=True, help="new dataset folder to write")
    parser.add_argument(
        "--images",
        required=True,
        metavar="PATTERN",
        help="glob of the image volumes, e.g. '*/Images/*.nii.gz' or '*_DE.nii.gz'",
    )
    parser.add_argument(
        "--labels",
        required=True,
        metavar="PATTERN",
        help="glob of the label volumes, e.g. '*/Contours/*.nii.gz' or '*_gd.nii.gz'",
    )
    parser.add_argument("--axis", type=int, default=2, help="voxel axis to slice along (default: 2, the third)")
    parser.add_argument(
        "--keep-empty", action="store_true", help="also write slices without any labelled voxel (label != 0)"
    )
    parser.add_argument(
        "--map",
        metavar="L=V,...",
        help="label value -> mask pixel value, e.g. 0=128,1=255,2=0,3=0,4=0 (default: each label value as it is)",
    )
    parser.add_argument(
        "--names",
        metavar="NAME=V,...",
        help="dataset.json label names of the mask values in class order, e.g. "
        "blood_pool=255,background=128,myocardium=0 (default: label<L>=<V>)",
    )
    parser.add_argument(
        "--scale",
        choices=("percentile", "none"),
        default="percentile",
        help="intensities: 'percentile' maps each volume's --percentiles to the full range "
        "(default); 'none' writes integer intensities unchanged",
    )
    parser.add_argument(
        "--percentiles",
        default="0.5,99.5",
        metavar="LOW,HIGH",
        help="percentiles of all voxels of a volume mapped to black and white (default: 0.5,99.5)",
    )
    parser.add_argument("--bits", type=int, choices=(8, 16), default=8, help="image PNG bit depth (default: 8)")
    parser.add_argument(
        "--size",
        type=int,
        metavar="N",
        help="crop/pad to NxN around the centre of the labelled region (default: keep the size)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        metavar="MM",
        help="first resample in-plane to this pixel spacing: image linear, labels nearest",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Convert, then print what was written."""
    from lgeseg.data import parse_labels
    from lgeseg.nifti import import_nifti, parse_value_map

    summary = import_nifti(
        args.source,
        args.out,
        args.images,
        args.labels,
        axis=args.axis,
        keep_empty=args.keep_empty,
        value_map=parse_value_map(args.map) if args.map else None,
        names=parse_labels(args.names, option="--names") if args.names else None,
        scale=args.scale,
        percentiles=percentiles(args.percentiles),
        bits=args.bits,
        size=args.size,
        spacing=args.spacing,
    )
    for note in summary.notes:
        print(f"note: {note}")
    empty = ""
    if summary.skipped_empty:
        empty = f", {summary.skipped_empty} empty slices left out (--keep-empty keeps them)"
    print(f"{summary.cases} cases -> {summary.slices} slices in {summary.out}{empty}; labels {summary.labels}")
    return 0
