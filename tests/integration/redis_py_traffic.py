#!/usr/bin/python3
"""redis-py traffic for the shadow verification tests: every kind of read kvd mirrors,
and the writes they read, until the stop file appears (at most 10 minutes). Exits 1 on
any error a correct server would not give; prints what it did."""
import os
import random
import sys
import time

import redis


def main():
    port, stop = int(sys.argv[1]), sys.argv[2]
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    rng = random.Random(20261203)
    ops = errors = 0
    deadline = time.monotonic() + 600
    while not os.path.exists(stop) and time.monotonic() < deadline:
        k = rng.randrange(500)
        try:
            r.set(f"py:s:{k}", f"v{ops}")
            r.get(f"py:s:{k}")
            r.mget([f"py:s:{k}", f"py:s:{k + 1}", "py:missing"])
            r.exists(f"py:s:{k}", "py:missing")
            r.rpush(f"py:l:{k % 50}", ops)
            r.lrange(f"py:l:{k % 50}", 0, 20)
            r.llen(f"py:l:{k % 50}")
            r.sadd(f"py:set:{k % 50}", f"m{k}")
            r.smembers(f"py:set:{k % 50}")
            r.scard(f"py:set:{k % 50}")
            r.hset(f"py:h:{k % 50}", f"f{k}", ops)
            r.hget(f"py:h:{k % 50}", f"f{k}")
            r.hgetall(f"py:h:{k % 50}")
            r.zadd(f"py:z:{k % 50}", {f"m{k}": rng.random()})
            r.zrange(f"py:z:{k % 50}", 0, -1, withscores=True)
            r.zcard(f"py:z:{k % 50}")
            if r.llen(f"py:l:{k % 50}") > 200:
                r.delete(f"py:l:{k % 50}")
            ops += 1
        except redis.exceptions.RedisError as e:
            errors += 1
            print(f"error after {ops} rounds: {e!r}", flush=True)
            if errors > 10:
                break
    print(f"redis-py: {ops} rounds of 16 commands, {errors} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
