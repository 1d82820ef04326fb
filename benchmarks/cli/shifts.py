"""The ``tangentless shifts`` command: shifted test sets (CIFAR-10-C corruptions, translations and
rotations, the paired JPEG shift) from a test set's real images, cached and checksummed in a folder
(:mod:`tangentless.benchmarks.corruptions`)."""
from __future__ import annotations

import json
import pathlib

from ..data_folder import resolve_data
from .arguments import CIFAR_SUBSET, existing_file, official_indices, report_folder

JPEG_COPY = "cifar10_jpeg"


def _shift_names(text: str) -> tuple[str, ...]:
    from ..corruptions import SHIFTS
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SHIFTS]
    if not names or unknown:
        raise ValueError(f"--shifts: unknown {', '.join(unknown) or '(none given)'}; choose among "
                         f"{', '.join(SHIFTS)}")
    return names


def _read_test(path: pathlib.Path):
    """(images, labels, official indices or None) of a test .npz."""
    from ..datasets import load_npz_images
    images, labels = load_npz_images(path)
    if labels is None:
        raise ValueError(f"{path} has no 'labels' array")
    return images, labels, official_indices(path)


def run_shifts(args) -> int:
    """The ``shifts`` command: write the shifted sets into --out; a JSON summary on stdout."""
    import numpy as np
    from .. import corruptions
    from ..datasets import load_packed_jpeg_npz
    test = args.test or resolve_data(CIFAR_SUBSET) / "test.npz"
    if not test.is_file():
        args.parser.error(f"no test set at {test}: pass --test TEST.npz")
    names = _shift_names(args.shifts) if args.shifts else corruptions.SHIFTS
    out = report_folder(args)
    images, labels, index = _read_test(test)
    summary = {"test": str(test), "seed": args.seed, "out": str(out), "sets": {}}
    paths = corruptions.write_shifted_sets(images, labels, out, seed=args.seed, names=names,
                                           indices=index, progress=not args.quiet)
    jpeg = args.jpeg or resolve_data(JPEG_COPY) / "test.npz"
    if args.jpeg or jpeg.is_file():
        if not jpeg.is_file():
            args.parser.error(f"--jpeg {jpeg}: no such file")
        if index is None:
            raise ValueError(f"{test} has no 'index' array: the JPEG shift pairs images by official index")
        with np.load(jpeg, allow_pickle=False) as data:
            if "official_index" not in data.files:
                raise ValueError(f"{jpeg} has no 'official_index' array to pair its images by")
            official = data["official_index"]
        known = int(np.max(np.nonzero(official >= 0)[0])) + 1 if np.any(official >= 0) else 0
        j_images, j_labels = load_packed_jpeg_npz(jpeg, limit=known)
        paths.append(corruptions.write_jpeg_set((images, labels, index),
                                                (j_images, j_labels, official[:known]), out))
    for path in paths:
        _, _, _, record = corruptions.load_shifted_set(out, path.stem)
        summary["sets"][path.stem] = {"file": str(path), "images": record["images"],
                                      "severities": record["severities"]}
    print(json.dumps(summary, indent=1))
    return 0


def add_command(subparsers) -> None:
    """Add ``shifts`` to an ``add_subparsers()`` object."""
    s = subparsers.add_parser(
        "shifts", help="shifted test sets: CIFAR-10-C corruptions, deformations, the JPEG shift",
        description="Write shifted copies of a test set's images into --out: the 15 CIFAR-10-C "
                    "corruptions at their CIFAR severities 1-5, translations and rotations "
                    "(severities 1-5), and, where the JPEG copy of CIFAR-10 is found, the paired "
                    "JPEG shift. Seeded: the same images and seed give the same files. A rerun "
                    "verifies and keeps what is there (checksummed) and adds what is missing. "
                    f"Default test set: {resolve_data(CIFAR_SUBSET) / 'test.npz'}.")
    s.add_argument("--test", type=existing_file,
                   help="test .npz (images uint8 (N, 32, 32, 3), labels, index = official indices)")
    s.add_argument("--jpeg", type=pathlib.Path,
                   help="packed-JPEG test .npz with official_index (default: the data folder's "
                        f"{JPEG_COPY}/test.npz, where present)")
    s.add_argument("--shifts", help="comma-separated shifts (default: all)")
    s.add_argument("--seed", type=int, default=0, help="seed of the corruptions' randomness (default 0)")
    s.add_argument("--out", type=pathlib.Path, default=pathlib.Path("shifted-test-sets"),
                   help="folder of the shifted sets (default shifted-test-sets)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(run=run_shifts, parser=s)
