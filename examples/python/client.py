#!/usr/bin/env python3
"""A client of the example system in Python 3, standard library only.

It talks to the middle layer's HTTP/JSON gateway (`middle -http ADDR`):
prompts for numbers, sends each line as one batch to POST /v1/process,
and prints a line per number, in input order, as the Go client does:

    -3 -> 9 (backend x)

A line that is not all integers, or a batch the middle layer refuses, is
reported on standard error and the prompt goes on; `quit`, `exit` or the
end of input leaves. The prompt goes to standard error, so that standard
output holds the answers only.

    python3 examples/python/client.py --url http://127.0.0.1:7080
"""

import argparse
import json
import sys
import urllib.error
import urllib.request


def process(url, numbers, timeout, partial):
    """Sends numbers to the gateway; returns its answers, or raises
    RuntimeError with the gateway's message."""
    query = "?timeout=%gs" % timeout + ("&partial=1" if partial else "")
    req = urllib.request.Request(
        url.rstrip("/") + "/v1/process" + query,
        data=json.dumps(numbers).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout + 5) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        try:
            body = json.load(e)
            raise RuntimeError("%s (%s, HTTP %d)" % (body["error"], body["code"], e.code)) from None
        except (ValueError, KeyError):
            raise RuntimeError("HTTP %d %s" % (e.code, e.reason)) from None
    except urllib.error.URLError as e:
        raise RuntimeError("the middle layer at %s is not reachable: %s" % (url, e.reason)) from None


def parse(line):
    """Returns the integers of line, or raises ValueError naming the token."""
    numbers = []
    for tok in line.split():
        try:
            numbers.append(int(tok, 10))
        except ValueError:
            raise ValueError("%r is not an integer" % tok) from None
    return numbers


def main():
    ap = argparse.ArgumentParser(description="Sends numbers to the example system's HTTP gateway and prints the answers.")
    ap.add_argument("--url", default="http://127.0.0.1:7080", help="the gateway (middle -http ADDR)")
    ap.add_argument("--timeout", type=float, default=10, help="seconds each batch may take")
    ap.add_argument("--partial", action="store_true", help="print failed numbers in their place")
    args = ap.parse_args()

    failed = False
    while True:
        sys.stderr.write("> ")
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            sys.stderr.write("\n")
            break
        line = line.strip()
        if line.lower() in ("quit", "exit"):
            break
        if not line:
            continue
        try:
            answers = process(args.url, parse(line), args.timeout, args.partial)
        except (ValueError, RuntimeError) as e:
            print("client.py: %s" % e, file=sys.stderr)
            failed = True
            continue
        for a in answers:
            if "error" in a:
                print("%d -> failed (backend %s): %s" % (a["input"], a["backend"], a["error"]))
                failed = True
            else:
                print("%d -> %d (backend %s)" % (a["input"], a["output"], a["backend"]))
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
