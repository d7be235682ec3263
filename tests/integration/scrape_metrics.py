#!/usr/bin/python3
"""Scrapes a Baton metrics endpoint every 10 ms until a stop file appears, parsing each
scrape with Prometheus's own Python parser (Debian's python3-prometheus-client), and
writes a JSON summary: scrapes, failures (refused, reset, bad status, unparsable), every
counter that went backwards, and the last values seen. SUMMARY_FILE.first appears after the first good scrape, so
that a caller can wait for it. Used by operations_test.

usage: scrape_metrics.py URL STOP_FILE SUMMARY_FILE [MAX_SECONDS]
"""
import json
import os
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    url, stop_file, summary_file = sys.argv[1:4]
    max_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 600
    deadline = time.monotonic() + max_seconds
    scrapes, failures, backwards = 0, [], []
    last = {}  # series -> value, for counters and histogram parts
    generations = set()
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        scrapes += 1
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status != 200:
                    raise RuntimeError("HTTP status %d" % reply.status)
                text = reply.read().decode("utf-8")
            families = list(text_string_to_metric_families(text))
        except Exception as e:  # every way a scrape can fail counts
            failures.append("%.3f %s: %s" % (time.monotonic(), type(e).__name__, e))
            time.sleep(0.01)
            continue
        if not os.path.exists(summary_file + ".first"):
            open(summary_file + ".first", "w").close()
        for family in families:
            for s in family.samples:
                key = s.name + json.dumps(s.labels, sort_keys=True)
                if family.type in ("counter", "histogram"):
                    if key in last and s.value < last[key]:
                        backwards.append("%s: %s -> %s" % (key, last[key], s.value))
                    last[key] = s.value
                elif s.name == "baton_generation":
                    generations.add(int(s.value))
        time.sleep(0.01)
    with open(summary_file, "w") as out:
        json.dump({"scrapes": scrapes, "failed": len(failures), "failures": failures[:10],
                   "backwards": backwards[:10], "generations": sorted(generations),
                   "last": last}, out)


if __name__ == "__main__":
    main()
