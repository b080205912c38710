"""Time from clicking Generate to each map visible in the browser, against the method's own runtime.

    .venv/bin/python -m benchmarks.latency [--methods gradcam msgcam] [--rounds 3]
        [--conditions idle experiment load] [--upload PHOTO] [--host http://127.0.0.1:8000]
        [--out benchmarks/results]

Headless Chromium (Debian's, through Playwright) registers, opens Explain, picks a sample photo
(or, with ``--upload``, uploads that file afresh every round, as a phone photo would come), ticks the methods and clicks Generate; an observer in the page stamps the moment each result card
reports ``data-status=done`` (set once its map is drawn). The gap is visible-after minus the
runtime the job row records (``seconds``): queueing, polling, transfer and drawing.

Conditions: ``idle``; ``experiment`` (a small evaluation on the bundled localisation set queued
first); ``load`` (``benchmarks.loadtest`` running alongside in a subprocess). Without ``--host`` the
site is started in a fresh data folder by its launcher and stopped at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.loadtest import experiment_submit, started_site

# Every DOM hook the benchmark relies on, in one place (ids and data attributes, not layout).
SELECTORS = {
    "register_username": "#id_username", "register_password1": "#id_password1",
    "register_password2": "#id_password2", "submit": "button[type=submit]",
    "sample": "#samples [data-sample='{key}']", "upload": "#image-input", "predictions_ready": "#predictions tr",
    "method_pick": "#method-list li[data-method='{key}'] input.pick",
    "generate": "[data-testid=generate]", "cards": "#results .card",
}

# ``at``: the wall clock (ms since the epoch) when the card is done, to set beside the job row's
# times (same machine, same clock): where the gap goes.
OBSERVER = """([cardsSelector, generateSelector]) => {
  window.__visible = {};
  // The clock starts when the button gets its click (capturing, before the page's handler), not
  // when Playwright is asked to click: its scrolling and actionability checks are no user's wait.
  let t0 = null;
  document.querySelector(generateSelector).addEventListener('click', () => {
    window.__clicked = Date.now(); t0 = performance.now(); }, {capture: true, once: true});
  const seen = () => t0 !== null && document.querySelectorAll(cardsSelector).forEach(card => {
    const key = card.dataset.method + (card.dataset.enhance === 'true' ? '+enh' : '');
    if ((card.dataset.status === 'done' || card.dataset.status === 'failed') && !(key in window.__visible))
      window.__visible[key] = {ms: performance.now() - t0, at: Date.now(), status: card.dataset.status,
                               runtime: (card.querySelector('.runtime') || {}).textContent || ''};
  });
  new MutationObserver(seen).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                      attributeFilter: ['data-status']});
}"""


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise SystemExit("latency: Debian's chromium is required (apt install chromium)")
    return path


def _epoch(stamp: str | None) -> float | None:
    return None if stamp is None else datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _job_rows(page, host: str) -> dict[str, dict]:
    """The map jobs of the newest set (each round makes one), per method key, read with the page's session."""
    sets = page.evaluate("""async (url) => { const r = await fetch(url, {credentials: 'same-origin'});
                            return r.json(); }""", f"{host}/api/explanation-sets/")
    sets = sets.get("results", sets) if isinstance(sets, dict) else sets
    newest = max(sets, key=lambda s: s["created_at"])
    return {row["method_key"] + ("+enh" if row.get("enhance") else ""): row
            for row in newest["jobs"] if row.get("kind") != "predict"}


def _timeline(clicked_ms: float, visible_ms: float, job: dict | None) -> dict:
    """Where the time from the click to the visible map went (seconds), from the job row's stamps.

    ``request``: click to the job row (the page's POST); ``queue``: row to a worker starting it;
    ``worker_overhead``: the worker's time around the method (model, image, files, rows);
    ``method``: the method's own runtime; ``page``: job finished to the map drawn (the page's poll
    interval, the map's download, drawing)."""
    if job is None or job.get("finished_at") is None:
        return {}
    created, started, finished = (_epoch(job.get(k)) for k in ("created_at", "started_at", "finished_at"))
    clicked, visible, seconds = clicked_ms / 1000, visible_ms / 1000, job.get("seconds") or 0.0
    return {"request_s": created - clicked, "queue_s": started - created,
            "worker_overhead_s": finished - started - seconds, "method_s": seconds, "page_s": visible - finished}


def measure(host: str, methods: list[str], rounds: int, sample: str = "coffee", upload: Path | None = None) -> list[dict]:
    """``rounds`` Generate clicks in one browser session; one row per method per round, each on
    the bundled ``sample`` or on a fresh upload of ``upload``."""
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.set_default_timeout(180_000)
        password = uuid.uuid4().hex
        page.goto(f"{host}/register/")
        page.fill(SELECTORS["register_username"], f"lat-{uuid.uuid4().hex[:8]}")
        page.fill(SELECTORS["register_password1"], password)
        page.fill(SELECTORS["register_password2"], password)
        page.click(SELECTORS["submit"])
        page.wait_for_load_state()
        for index in range(rounds):
            page.goto(f"{host}/explain/")
            if upload is not None:
                page.set_input_files(SELECTORS["upload"], str(upload))
            else:
                page.click(SELECTORS["sample"].format(key=sample))
            page.wait_for_selector(f"{SELECTORS['predictions_ready']} >> nth=0")
            for key in methods:
                page.check(SELECTORS["method_pick"].format(key=key))
            page.evaluate(OBSERVER, [SELECTORS["cards"], SELECTORS["generate"]])
            page.click(SELECTORS["generate"])
            page.wait_for_function("n => Object.keys(window.__visible).length >= n", arg=len(methods),
                                   timeout=300_000)
            visible = page.evaluate("window.__visible")
            clicked = page.evaluate("window.__clicked")
            jobs = _job_rows(page, host)
            for key, stamp in visible.items():
                job = jobs.get(key)
                runtime = None if job is None else job.get("seconds")
                after = stamp["ms"] / 1000
                rows.append({"round": index, "method": key, "status": stamp["status"], "runtime_s": runtime,
                             "visible_after_s": after, "gap_s": None if runtime is None else after - runtime,
                             **_timeline(clicked, stamp["at"], job)})
        browser.close()
    return rows


PARTS = ("request_s", "queue_s", "worker_overhead_s", "page_s")


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarise(rows: list[dict]) -> dict:
    out = {}
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method and r["status"] == "done"]
        out[method] = {"n": len(mine), "runtime_s": _median(mine, "runtime_s"),
                       "visible_after_s": _median(mine, "visible_after_s"), "gap_s": _median(mine, "gap_s"),
                       "gap_max_s": max((r["gap_s"] for r in mine if r["gap_s"] is not None), default=None),
                       **{part: _median(mine, part) for part in PARTS}}
    return out


@contextlib.contextmanager
def condition(name: str, host: str, load_users: int):
    if name == "experiment":
        experiment_submit(host, images=12)  # the bundled localisation set holds 12
        time.sleep(3)  # let the batch work reach the workers
        yield
    elif name == "load":
        process = subprocess.Popen([sys.executable, "-m", "benchmarks.loadtest", "--host", host,
                                    "--users", str(load_users), "--duration", "240", "--drain-timeout", "5"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(15)  # users registered and submitting
        try:
            yield
        finally:
            process.terminate()
            process.wait(timeout=60)
    else:
        yield


def render(results: dict) -> str:
    lines = [f"## Generate → map visible (median over rounds; photo: {results.get('photo', 'sample coffee')})", "",
             "The gap is visible after minus the method's runtime; its parts: the page's request, the wait "
             "for a worker (queue), the worker's time around the method, and job finished → map drawn (page).", "",
             "| condition | method | runtime s | visible after s | gap s | worst gap s "
             "| request s | queue s | worker overhead s | page s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def f(v):
        return "–" if v is None else f"{v:.2f}"

    for name, per_method in results["conditions"].items():
        for method, row in per_method.items():
            lines.append(f"| {name} | {method} | {f(row['runtime_s'])} | {f(row['visible_after_s'])} | "
                         f"{f(row['gap_s'])} | {f(row['gap_max_s'])} | "
                         + " | ".join(f(row.get(part)) for part in PARTS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="latency", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="a site already up (loopback); default: start one in a fresh data folder")
    parser.add_argument("--methods", nargs="+", default=["gradcam", "msgcam"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conditions", nargs="+", default=["idle", "experiment"],
                        choices=["idle", "experiment", "load"])
    parser.add_argument("--load-users", type=int, default=20)
    parser.add_argument("--upload", type=Path, help="a photo file uploaded every round, in place of a bundled sample")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.upload is not None and not args.upload.is_file():
        parser.error(f"--upload: no file at {args.upload}")
    if args.host and not args.host.startswith(("http://127.", "http://localhost")):
        parser.error("--host must be on loopback")
    results = {"methods": args.methods, "rounds": args.rounds,
               "photo": f"upload {args.upload.name}" if args.upload else "sample coffee", "conditions": {}, "rows": {}}
    with contextlib.ExitStack() as stack:
        host = args.host.rstrip("/") if args.host else stack.enter_context(started_site())
        for name in args.conditions:
            with condition(name, host, args.load_users):
                rows = measure(host, args.methods, args.rounds, upload=args.upload)
            results["rows"][name] = rows
            results["conditions"][name] = summarise(rows)
            if args.out:  # after each condition: a later one that fails keeps the earlier figures
                _write(args.out, results)
    results["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    text = render(results)
    print(text)
    if args.out:
        _write(args.out, results)
    return 0


def _write(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latency.md").write_text(render(results))


if __name__ == "__main__":
    sys.exit(main())
