"""The GPU checks in one run (under 8 minutes on one H200): fast mode's tolerance, the
engine benchmark and the live benchmark, each beside diffusers eager on the same device.

    .venv/bin/python tests/bench/gpu.py              # CUDA; writes out/gpu/*.json
    .venv/bin/python tests/bench/gpu.py --smoke      # the same steps, tiny model, CPU
    .venv/bin/python tests/bench/gpu.py --out DIR    # elsewhere

Steps, each a benchmark script in its own process with its own time limit (the total is
capped at --budget seconds; a step cut short is reported as such, and the later ones get
what is left):
1. `engine_graphs`: bench/engine.py on SD 1.5's architecture (random weights), fp16, 512²,
   20 steps with classifier-free guidance, 1 and 3 units; exact mode and --fast graphs
   beside diffusers. Fast mode's tolerance: each fast image within 4/255 of exact mode's.
2. `live`: bench/live.py --full-size through gRPC: 4-step LCM img2img at strength 0.5 and
   1 step, one depth unit from a float buffer, TAESD; servers exact, --fast graphs, and
   --fast graphs --stream-batch; diffusers' img2img pipeline with the same TAESD.
3. `engine_compile`: step 1 with --fast compile (inductor; its compile time is the
   `first_run_s` of each row and `compile_capture_s_total`).
Writes DIR/<step>.json (the benchmark's JSON), DIR/<step>.log (its stderr) and
DIR/summary.json: the tolerance verdict, the targets (engine >= 2x diffusers' steps/s with
1 and 3 units; live 4 steps >= 50 fps with lag <= 60 ms; 1 step >= 100 fps) met or not, per
variant. Exits 1 when a step failed or a fast image is out of tolerance, 2 without CUDA
(unless --smoke).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parents[1]
ENGINE_TARGET = 2.0  # x diffusers eager's steps/s, 1 and 3 units
LIVE_TARGETS = {4: (50.0, 60.0), 1: (100.0, None)}  # steps -> (min fps, max lag ms)


def steps(smoke: bool) -> list[tuple[str, list[str], float]]:
    """(name, command, time limit in seconds)."""
    python = sys.executable
    if smoke:
        engine = ["--size", "64", "--steps", "2", "--repeats", "1", "--units", "1,3"]
        engine += ["--only-plain"]
        return [
            ("engine_graphs", [python, str(BENCH / "engine.py"), *engine], 300),
            (
                "live",
                [python, str(BENCH / "live.py"), "--quick", "--seconds", "1"]
                + ["--steps", "1,4", "--units", "1"],
                300,
            ),
            (
                "engine_compile",
                [python, str(BENCH / "engine.py"), *engine, "--fast", "compile"]
                + ["--compile-backend", "eager"],
                400,
            ),
        ]
    engine = [python, str(BENCH / "engine.py"), "--full-size", "--size", "512", "--steps", "20"]
    engine += ["--device", "cuda", "--dtype", "float16", "--units", "1,3", "--only-plain"]
    live = [python, str(BENCH / "live.py"), "--full-size", "--device", "cuda"]
    live += ["--dtype", "float16", "--seconds", "4", "--interval", "0.004"]
    return [
        ("engine_graphs", [*engine, "--fast", "graphs"], 150),
        ("live", live, 210),
        ("engine_compile", [*engine, "--fast", "compile", "--repeats", "2"], 240),
    ]


def run_step(name: str, command: list[str], limit: float, out: Path) -> dict:
    started = time.perf_counter()
    with (out / f"{name}.log").open("w") as log:
        try:
            done = subprocess.run(
                command, stdout=subprocess.PIPE, stderr=log, text=True, timeout=limit, cwd=ROOT
            )
        except subprocess.TimeoutExpired:
            return {"ok": False, "why": f"cut at {limit:.0f} s", "seconds": round(limit)}
    seconds = round(time.perf_counter() - started, 1)
    if done.returncode != 0:
        return {"ok": False, "why": f"exit {done.returncode}, see {name}.log", "seconds": seconds}
    (out / f"{name}.json").write_text(done.stdout)
    return {"ok": True, "seconds": seconds, "result": json.loads(done.stdout)}


def engine_verdict(result: dict, mode: str) -> dict:
    rows = result["plain"]
    return {
        "within_4_255": all(row[mode]["within_4_255"] for row in rows),
        "max_abs_diff_vs_exact_255": max(row[mode]["max_abs_diff_vs_exact_255"] for row in rows),
        "speedup_vs_diffusers": {row["units"]: row[mode]["speedup_vs_diffusers"] for row in rows},
        "meets_2x": all(row[mode]["speedup_vs_diffusers"] >= ENGINE_TARGET for row in rows),
        "capture_s_total": result[f"{mode}_capture_s_total"],
    }


def live_verdict(result: dict) -> dict:
    verdict = {}
    for row in result["settings"]:
        fps_min, lag_max = LIVE_TARGETS.get(row["steps"], (None, None))
        setting = f"{row['size']}², {row['steps']} steps, {row['units']} units"
        for variant in result["variants"]:
            measured = row[variant]
            met = fps_min is not None and measured["fps"] >= fps_min
            if lag_max is not None:
                met = met and measured["lag_ms"] is not None and measured["lag_ms"] <= lag_max
            row_verdict = {**measured, "fps_ratio": row["fps_ratio"][variant], "target_met": met}
            verdict[f"{setting}, {variant}"] = row_verdict
        verdict[f"{setting}, diffusers"] = row["diffusers"]
    return verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "gpu")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for every step")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print(
            "gpu.py: needs a CUDA device and torch sees none (torch "
            f"{torch.__version__}); on this machine run `gpu.py --smoke` (tiny model, CPU)",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + args.budget
    summary: dict = {"smoke": args.smoke, "steps": {}}
    for name, command, limit in steps(args.smoke):
        left = deadline - time.perf_counter()
        if left < 30:
            summary["steps"][name] = {"ok": False, "why": "no time left in --budget"}
            continue
        print(f"gpu.py: {name} (at most {min(limit, left):.0f} s)", file=sys.stderr, flush=True)
        outcome = run_step(name, command, min(limit, left), args.out)
        result = outcome.pop("result", None)
        summary["steps"][name] = outcome
        if result is None:
            continue
        if name.startswith("engine_"):
            mode = name.removeprefix("engine_")
            if mode in result["plain"][0]:
                summary[name] = engine_verdict(result, mode)
            else:  # the smoke run's graphs step: graphs need CUDA, exact mode only
                summary[name] = {"plain": result["plain"]}
        else:
            summary["live"] = live_verdict(result)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    failed = [name for name, outcome in summary["steps"].items() if not outcome["ok"]]
    out_of_tolerance = [
        name
        for name in ("engine_graphs", "engine_compile")
        if not summary.get(name, {}).get("within_4_255", True)
    ]
    if failed or out_of_tolerance:
        print(f"gpu.py: failed {failed}, out of tolerance {out_of_tolerance}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
