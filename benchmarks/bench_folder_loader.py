"""Image-folder throughput: Cats-vs-Dogs JPEGs to 150x150 uint8 batches of 32.

Compares, on the shared photos (train/: 2,000 JPEGs of varying size, median ~447x374):

- baseline: a single-threaded PIL loop doing what Keras's `load_img` (and so
  `flow_from_directory`) does per image: open, convert to RGB if needed, resize (bilinear
  here, as ours), then stack into batches;
- convjax cold: `image_dataset_from_directory` streaming one epoch with no cache, then with
  an empty cache folder (so the epoch also writes the cache), and once with full-size JPEG
  decoding (`jpeg_draft=False`) to show what the thread pool alone gives;
- convjax warm: a new dataset (as a later run would make) reading that cache;
- Keras 3 `image_dataset_from_directory` (tf.data: decodes with TensorFlow's own JPEG and
  resize kernels, in parallel), run by `--tf-python` (default: this interpreter), skipped with
  the reason when that interpreter cannot import TensorFlow.

Every file is read once before timing, so all rows measure decoding, not the disk. Targets:
cold (with cache writing) >= 2x the baseline, warm >= 20x.

    python benchmarks/bench_folder_loader.py                      # ../shared/data by default
    python benchmarks/bench_folder_loader.py --data DIR --limit 500 --split validation

The data folder comes from --data, else $CONVJAX_SHARED_DATA, else ../shared/data beside the
repository; the archive is extracted once into --workdir (default: $CONVJAX_CACHE or
~/.cache/convjax). The machine is shared, so the loaders run in 8 short interleaved rounds and
the table gives medians of the per-round ratios (with their range) and CPU ms per image.
Runtime about a minute. One run on the idle 2-core machine (load average 0.2 at the start;
README "Results" has the others):

    single-threaded PIL loop                        463 img/s   1.00x   2.15 CPU ms/img
    convjax cold, no cache                         1140         2.54x   1.58
    convjax cold, no cache, jpeg_draft=False        834         1.81x   2.25
    convjax cold, writing the cache                1040         2.21x   1.63   (target 2x)
    convjax warm, from the cache                  43877        94.9x    0.02   (target 20x)
    Keras image_dataset_from_directory             1563         2.99x   1.13   (--tf-python)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIZE, BATCH = (150, 150), 32


def default_data_dir() -> Path:
    return Path(os.environ.get("CONVJAX_SHARED_DATA", REPO.parent / "shared" / "data"))


def measure(batches) -> tuple[float, float]:
    """Consumes batches (images, or (images, labels)): (images per second, CPU ms per image).
    CPU time counts every thread of this process, so it shows the work done per image
    whatever share of the shared cores the run happened to get."""
    start, cpu, count = time.perf_counter(), time.process_time(), 0
    for batch in batches:
        count += len(batch[0] if isinstance(batch, tuple) else batch)
    cpu_ms = 1000 * (time.process_time() - cpu) / count
    return count / (time.perf_counter() - start), cpu_ms


def load_img(path: str) -> np.ndarray:
    """What `keras.utils.load_img(path, target_size=SIZE, interpolation="bilinear")` does."""
    with Image.open(path) as img:
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.asarray(img.resize((SIZE[1], SIZE[0]), Image.Resampling.BILINEAR))


def pil_loop(paths: list[str]):
    """The single-threaded baseline: one image at a time, in a shuffled order."""
    order = np.random.default_rng(0).permutation(len(paths))
    for start in range(0, len(paths), BATCH):
        yield np.stack([load_img(paths[i]) for i in order[start:start + BATCH]])


def convjax_dataset(paths: list[str], cache_dir, jpeg_draft: bool = True):
    """What `image_dataset_from_directory(..., label_mode=None)` builds, on the same files as
    the baseline (labels would cost nothing here; listing is not what is measured)."""
    from convjax.data import DecodeSpec, FolderDataset

    spec = DecodeSpec(SIZE, "rgb", "bilinear", jpeg_draft=jpeg_draft)
    return FolderDataset(paths, None, None, spec, label_mode=None, batch_size=BATCH, seed=0,
                         cache_dir=cache_dir)


# Keras's loader, timed by the interpreter that has TensorFlow (it may be another venv's). It
# prints (images/s, CPU ms per image) for one epoch; the listing happens before the clock starts.
KERAS_SNIPPET = """
import os, sys, time
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
ds = keras.utils.image_dataset_from_directory(
    sys.argv[1], image_size=(int(sys.argv[2]), int(sys.argv[3])), batch_size=int(sys.argv[4]),
    seed=0, verbose=False)
start, cpu, count = time.perf_counter(), time.process_time(), 0
for images, labels in ds:
    count += len(images)
print(count / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / count)
"""


def keras_peer(root: Path, python: str) -> tuple[float, float] | None:
    """Keras 3's own loader (tf.data) on the whole folder, in a child `python`; None (with
    the reason) when that interpreter cannot import TensorFlow and Keras."""
    proc = subprocess.run([python, "-c", KERAS_SNIPPET, str(root), str(SIZE[0]), str(SIZE[1]),
                           str(BATCH)], capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        print(f"Keras image_dataset_from_directory: skipped ({reason[:120]}; "
              "pass --tf-python with a venv that has tensorflow)")
        return None
    rate, cpu_ms = (float(x) for x in proc.stdout.split()[-2:])
    return rate, cpu_ms


def one_round(paths: list[str]) -> dict[str, tuple[float, float]]:
    """(images/s, CPU ms per image) of every loader, measured back to back."""
    rates = {"baseline": measure(pil_loop(paths)),
             "cold": measure(convjax_dataset(paths, None)),
             "cold_full_decode": measure(convjax_dataset(paths, None, False))}
    with tempfile.TemporaryDirectory() as cache:
        rates["cold_cache"] = measure(convjax_dataset(paths, cache))
        warm = convjax_dataset(paths, cache)  # a new dataset, as a later run, finds the cache
        rates["warm"] = measure(warm.epoch(1))
    return rates


ROWS = (  # (key, description, target ratio to the baseline)
    ("baseline", "single-threaded PIL loop", None),
    ("cold", "convjax cold, no cache", None),
    ("cold_full_decode", "convjax cold, no cache, jpeg_draft=False", None),
    ("cold_cache", "convjax cold, writing the cache", 2.0),
    ("warm", "convjax warm, from the cache", 20.0),
    ("keras", "Keras image_dataset_from_directory", None),
)


def run(root: Path, limit: int, rounds: int, per_round: int, tf_python: str) -> list[dict]:
    """Short interleaved rounds, each on the next `per_round` photos: the machine is shared,
    so each loader is compared with the baseline measured seconds before it, and the median
    of those ratios over the rounds is reported."""
    from convjax.data.folder import list_image_files

    paths = list_image_files(root)[0]
    paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))]
    paths = paths[:limit] if limit else paths
    for path in paths:  # into the OS page cache, so every row measures decoding
        Path(path).read_bytes()
    per_round = min(per_round, len(paths))
    print(f"{len(paths)} JPEGs under {root} -> {SIZE[0]}x{SIZE[1]} batches of {BATCH}; "
          f"{rounds} rounds of {per_round} photos; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    results = []
    for r in range(rounds):
        start = (r * per_round) % len(paths)
        chunk = (paths + paths)[start:start + per_round]  # wraps around the list
        results.append(one_round(chunk))
        print(f"round {r + 1} images/s: "
              + ", ".join(f"{k} {v[0]:.0f}" for k, v in results[-1].items()))
    if limit:
        print("Keras image_dataset_from_directory: skipped (it reads the whole folder; "
              "run without --limit)")
    elif (keras := keras_peer(root, tf_python)) is not None:
        results.append({"baseline": measure(pil_loop(paths)), "keras": keras})
    return results


def print_table(results: list[dict]) -> bool:
    print(f"\n{'loader (medians over rounds)':42s} {'images/s':>8s} {'x baseline':>10s} "
          f"{'(min-max)':>13s} {'CPU ms/img':>10s}  target")
    ok = True
    for key, name, target in ROWS:
        rounds = [r for r in results if key in r]
        if not rounds:
            continue
        rate = float(np.median([r[key][0] for r in rounds]))
        cpu_ms = float(np.median([r[key][1] for r in rounds]))
        ratios = [r[key][0] / r["baseline"][0] for r in rounds]
        ratio = float(np.median(ratios))
        verdict = ""
        if target is not None:
            ok &= ratio >= target
            verdict = f">= {target:g}x {'PASS' if ratio >= target else 'FAIL'}"
        spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
        print(f"{name:42s} {rate:8.0f} {ratio:10.2f} {spread:>13s} {cpu_ms:10.2f}  {verdict}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir(),
                        help="folder holding cats_vs_dogs-small.tar.gz")
    parser.add_argument("--split", default="train", choices=("train", "validation"))
    parser.add_argument("--limit", type=int, default=0, help="use only N files (0 = all)")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved repetitions")
    parser.add_argument("--per-round", type=int, default=500, help="photos per round")
    parser.add_argument("--workdir", default=None, help="where the archive is extracted")
    parser.add_argument("--tf-python", default=sys.executable,
                        help="interpreter for the Keras peer (a venv with tensorflow)")
    args = parser.parse_args()
    archive = args.data / "cats_vs_dogs-small.tar.gz"
    if not archive.exists():
        print(f"not found: {archive} (pass --data or set CONVJAX_SHARED_DATA)")
        return 2
    from convjax.data import resolve_folder

    root = resolve_folder(archive, args.workdir) / args.split
    return 0 if print_table(run(root, args.limit, args.rounds, args.per_round,
                                         args.tf_python)) else 1


if __name__ == "__main__":
    sys.exit(main())
