#!/usr/bin/env python3
"""Helper of scripts/bench.sh (benchmark only, never a test dependency).

  bench_implicit.py run  --train TRAIN.tsv --out RESULT.json --recs RECS.npz
                         [--factors 64] [--regularization 0.01] [--alpha 1.0]
                         [--iterations 15] [--threads 2] [--cg | --cholesky] [--cg-steps 3] [--k 10]
                         [--scheme linear|log] [--epsilon 1.0]
      The whole implicit 0.7.3 job, timed in-process: pandas reads the TSV (user item weight),
      scipy builds the user x item CSR (duplicates summed, as recflow sums them), fit, and
      recommend top-k for every user with already-seen items filtered. Confidence: recflow uses
      c = 1 + alpha*w (or 1 + alpha*ln(1 + w/epsilon) with --scheme log), implicit
      c = alpha_impl * value, so the matrix holds recflow's c and implicit runs with
      alpha = 1 (the same objective). Writes timings to RESULT.json and the
      recommendations (raw ids) to RECS.npz after the clock stopped.

  bench_implicit.py eval --train TRAIN.tsv --test TEST.tsv (--recs RECS.npz | --recflow STORE_VERSION_DIR)
                         [--k 10]
      precision@k with one definition for both systems (implicit's ranking_metrics_at_k):
      hits / sum_u min(k, |T_u|) over users with train and test pairs, T_u = the user's test
      items not already in their train items (those can never be recommended). Prints JSON.
"""

import argparse
import glob
import io
import json
import os
import subprocess
import sys
import time

# implicit wants single-threaded BLAS (it parallelises itself).
for _v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_v, None)
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def read_part(path, **kw):
    """A recs part as a DataFrame: plain (`part-*.tsv`) or zstd (`part-*.tsv.zst`, recflow's
    default output.compression), decompressed by the zstd tool so the zstandard module is not
    needed."""
    if path.endswith(".zst"):
        text = subprocess.run(["zstd", "-dc", path], check=True, stdout=subprocess.PIPE).stdout
        return pd.read_csv(io.BytesIO(text), **kw)
    return pd.read_csv(path, **kw)


def read_tsv(path):
    return pd.read_csv(path, sep="\t", header=None, names=["user", "item", "w"],
                       dtype={"user": np.int64, "item": np.int64, "w": np.float32})


def cmd_run(a):
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    t0 = time.time()
    df = read_tsv(a.train)
    uids, uidx = np.unique(df.user.values, return_inverse=True)
    iids, iidx = np.unique(df.item.values, return_inverse=True)
    ui = sp.csr_matrix((df.w.values, (uidx, iidx)), shape=(len(uids), len(iids)))
    ui.sum_duplicates()
    keep = ui.data > 0  # recflow drops pairs whose summed weight is <= 0
    if not keep.all():
        ui.data[~keep] = 0
        ui.eliminate_zeros()
    term = np.log1p(ui.data / a.epsilon) if a.scheme == "log" else ui.data
    ui.data = (1.0 + a.alpha * term).astype(np.float32)
    del df, uidx, iidx
    t_load = time.time()
    model = AlternatingLeastSquares(factors=a.factors, regularization=a.regularization,
                                    alpha=1.0, iterations=a.iterations, use_cg=a.solver == "cg",
                                    random_state=1, num_threads=a.threads,
                                    calculate_training_loss=False)
    model.cg_steps = a.cg_steps
    marks = []
    model.fit(ui, show_progress=False, callback=lambda *_: marks.append(time.time()))
    t_fit = time.time()
    users = np.arange(len(uids))
    if a.k > 0:
        ids, scores = model.recommend(users, ui, N=a.k, filter_already_liked_items=True)
    t_rec = time.time()
    starts = [t_load] + marks
    iters = [b - s for s, b in zip(starts, starts[1:])]
    res = {
        "system": "implicit", "solver": a.solver, "threads": a.threads,
        "load_s": t_load - t0, "fit_s": t_fit - t_load, "recommend_s": t_rec - t_fit,
        "total_s": t_rec - t0, "iteration_secs": iters,
        "users": int(len(uids)), "items": int(len(iids)), "pairs": int(ui.nnz),
    }
    if a.k > 0:
        valid = (ids >= 0) & np.isfinite(scores)
        np.savez(a.recs, users=uids, items=np.where(valid, iids[np.maximum(ids, 0)], -1))
    with open(a.out, "w") as fh:
        json.dump(res, fh)


def cmd_eval(a):
    train = read_tsv(a.train)[["user", "item"]].drop_duplicates()
    test = read_tsv(a.test)[["user", "item"]].drop_duplicates()
    # T_u: test items not in train for that user; only users with train pairs count.
    test = test.merge(train.assign(seen=1), on=["user", "item"], how="left")
    test = test[test.seen.isna()][["user", "item"]]
    test = test[test.user.isin(train.user.unique())]
    if a.recs:
        z = np.load(a.recs)
        items = z["items"][:, :a.k]
        recs = pd.DataFrame({"user": np.repeat(z["users"], items.shape[1]),
                             "item": items.ravel()})
        recs = recs[recs.item >= 0]
    else:
        parts = sorted(glob.glob(os.path.join(a.recflow, "recs", "part-*.tsv*")))
        recs = pd.concat([read_part(p, sep="\t", header=None, usecols=[0, 1, 3],
                                      names=["user", "item", "score", "rank"],
                                      dtype={"user": np.int64, "item": np.int64})
                          for p in parts])
        recs = recs[recs["rank"] <= a.k][["user", "item"]]
    hits = len(recs.merge(test, on=["user", "item"]))
    per_user = test.groupby("user").size().clip(upper=a.k)
    rel = int(per_user.sum())
    print(json.dumps({"precision": hits / max(rel, 1), "hits": hits, "relevant": rel,
                      "users": int(len(per_user)), "rec_rows": int(len(recs))}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--train", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--recs", required=True)
    r.add_argument("--factors", type=int, default=64)
    r.add_argument("--regularization", type=float, default=0.01)
    r.add_argument("--alpha", type=float, default=1.0)
    r.add_argument("--scheme", choices=["linear", "log"], default="linear")
    r.add_argument("--epsilon", type=float, default=1.0)
    r.add_argument("--iterations", type=int, default=15)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--solver", choices=["cg", "cholesky"], default="cg")
    r.add_argument("--cg-steps", type=int, default=3)
    r.add_argument("--k", type=int, default=10)
    e = sub.add_parser("eval")
    e.add_argument("--train", required=True)
    e.add_argument("--test", required=True)
    e.add_argument("--recs")
    e.add_argument("--recflow")
    e.add_argument("--k", type=int, default=10)
    a = p.parse_args()
    if a.cmd == "run":
        cmd_run(a)
    else:
        if bool(a.recs) == bool(a.recflow):
            sys.exit("eval: give exactly one of --recs and --recflow")
        cmd_eval(a)


if __name__ == "__main__":
    main()
