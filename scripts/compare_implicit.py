#!/usr/bin/env python3
"""Compare recflow's ALS with the reference library `implicit` on MovieLens 100K.

Benchmark only: this script, `implicit`, numpy, scipy and pandas are never test dependencies.

What it does
  1. Reads u.data (tab-separated: user item rating timestamp), keeps ratings >= --min-rating as
     binary positives (weight 1 for every kept pair, so confidence = 1 + alpha).
  2. Splits the pairs 80/20 per pair with numpy.random.default_rng(--split-seed) and writes
     OUT/train.tsv and OUT/test.tsv (`user<TAB>item<TAB>1`, no header).
  3. For each (factors, regularization, alpha, iterations) config and each model seed:
       - recflow: writes OUT/<cfg>/job.toml and runs
             recflow run JOB --set input.path=OUT/train.tsv --set output.store=OUT/<cfg>/store-sS
                 --set eval.holdout=0.0 --set recommend.k=10 --set recommend.mode=exact
                 --set als.seed=S -w THREADS -q
         and reads <store>/v000001/recs/part-*.tsv[.zst] (`user item score rank`); train seconds are
         manifest.json timings.train_secs.
       - implicit: implicit.als.AlternatingLeastSquares(factors, regularization, alpha,
         iterations, use_cg=False (Cholesky, as recflow), random_state=S, num_threads=THREADS)
         fit on the user x item CSR of ones, then recommend(N=10, filter_already_liked_items=True)
         for every train user; train seconds are the wall time of fit().
     Confidence differs between the two at the same alpha: recflow (linear scheme) uses
     c = 1 + alpha*w, while implicit 0.7.x uses c = alpha*w for stored entries (c = 1 for
     missing ones; benfred/implicit#74, and checked here by fitting implicit's Cholesky half-step:
     b = alpha*w*y, A = YtY + (alpha*w - 1)*yy' + lambda*I). So implicit runs twice:
       implicit    alpha = A      (the same hyperparameters; c = A for positives)
       implicit=c  alpha = 1 + A  (the same objective as recflow; c = 1 + A for positives)
     --gate picks which one the pass/fail check compares against (default: implicit=c).
  4. Evaluates both with one evaluator, over users that have both train and test items:
       precision@k = hits / sum_u min(k, |T_u|)
       ndcg@k      = mean_u DCG_u / IDCG_u, binary gains, 1/log2(rank+1), IDCG over min(k, |T_u|)
     (test items never seen in train stay in T_u for both systems.)
  5. Prints one row per (config, system, seed), mean/std per system, and recflow/implicit ratios
     of the means; the check passes when both ratios are >= 1 - --tolerance.

Usage (from the repository root, with the bench venv):
  python3 -m venv target/bench-venv
  target/bench-venv/bin/pip install "implicit>=0.7.2,<0.7.4" numpy scipy pandas
  target/bench-venv/bin/python scripts/compare_implicit.py
  target/bench-venv/bin/python scripts/compare_implicit.py --configs 32,0.1,1.0,15 --seeds 1 2 3

Exit code 0 when every config is within tolerance, 1 otherwise.
"""

import argparse
import glob
import io
import json
import os
import subprocess
import sys
import time

# Thread settings must be in place before numpy / implicit load BLAS. implicit wants BLAS
# single-threaded (it parallelises itself); CPU-model overrides only hurt numpy here.
for _v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_v, None)
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_part(path, **kw):
    """A recs part as a DataFrame: plain (`part-*.tsv`) or zstd (`part-*.tsv.zst`, recflow's
    default output.compression), decompressed by the zstd tool so the zstandard module is not
    needed."""
    if path.endswith(".zst"):
        text = subprocess.run(["zstd", "-dc", path], check=True, stdout=subprocess.PIPE).stdout
        return pd.read_csv(io.BytesIO(text), **kw)
    return pd.read_csv(path, **kw)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="/work/shared/data/ml-100k/u.data", help="MovieLens u.data")
    p.add_argument("--recflow", default=os.path.join(REPO, "target/release/recflow"))
    p.add_argument("--out", default=os.path.join(REPO, "target/compare-implicit"),
                   help="output dir (train.tsv, test.tsv, jobs, stores)")
    p.add_argument("--min-rating", type=float, default=4.0)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--split-seed", type=int, default=0, help="seed of the 80/20 split")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                   help="model seeds: implicit random_state and recflow als.seed")
    p.add_argument("--configs", nargs="+", default=["32,0.1,1.0,15", "64,0.01,10.0,15"],
                   help="factors,regularization,alpha,iterations")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2,
                   help="recflow -w and implicit num_threads")
    p.add_argument("--gate", choices=["implicit=c", "implicit"], default="implicit=c",
                   help="implicit variant recflow must be within tolerance of")
    p.add_argument("--tolerance", type=float, default=0.02,
                   help="allowed relative shortfall of recflow vs implicit (mean over seeds)")
    return p.parse_args()


def load_and_split(args):
    df = pd.read_csv(args.data, sep="\t", header=None,
                     names=["user", "item", "rating", "ts"])
    df = df[df.rating >= args.min_rating][["user", "item"]].drop_duplicates()
    df = df.sort_values(["user", "item"]).reset_index(drop=True)
    rng = np.random.default_rng(args.split_seed)
    is_test = rng.random(len(df)) < args.test_fraction
    train, test = df[~is_test].copy(), df[is_test].copy()
    os.makedirs(args.out, exist_ok=True)
    for name, part in (("train", train), ("test", test)):
        part.assign(w=1).to_csv(os.path.join(args.out, f"{name}.tsv"), sep="\t",
                                header=False, index=False)
    return train, test


def evaluate(recs, train_by_user, test_by_user, k):
    """recs: dict raw user -> list of raw items, best first."""
    hits = denom = 0
    ndcgs = []
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    for u, t in test_by_user.items():
        if u not in train_by_user:
            continue
        rec = recs.get(u, [])[:k]
        rel = np.array([1.0 if i in t else 0.0 for i in rec])
        n_ideal = min(k, len(t))
        hits += int(rel.sum())
        denom += n_ideal
        dcg = float((rel * disc[: len(rel)]).sum())
        ndcgs.append(dcg / float(disc[:n_ideal].sum()))
    return hits / denom, float(np.mean(ndcgs)), len(ndcgs)


def run_recflow(args, cfg, seed, train_path, cfg_dir):
    f, r, a, n = cfg
    job = os.path.join(cfg_dir, "job.toml")
    store = os.path.join(cfg_dir, f"store-s{seed}")
    with open(job, "w") as fh:
        fh.write(f"""[input]
format = "tsv"
header = "false"
user = 0
item = 1
weight = 2

[confidence]
alpha = {a}

[als]
factors = {f}
regularization = {r}
iterations = {n}

[shards]
virtual = 64

[output]
store = "{store}"
""")
    subprocess.run(["rm", "-rf", store], check=True)
    cmd = [args.recflow, "run", job, "-w", str(args.threads), "-q",
           "--set", f"input.path={train_path}", "--set", f"output.store={store}",
           "--set", "eval.holdout=0.0", "--set", f"recommend.k={args.k}",
           "--set", "recommend.mode=exact", "--set", f"als.seed={seed}"]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    vdir = os.path.join(store, "v000001")
    with open(os.path.join(vdir, "manifest.json")) as fh:
        manifest = json.load(fh)
    train_secs = manifest.get("timings", {}).get("train_secs", wall)
    parts = sorted(glob.glob(os.path.join(vdir, "recs", "part-*.tsv*")))
    df = pd.concat([read_part(p, sep="\t", header=None,
                                names=["user", "item", "score", "rank"]) for p in parts])
    df = df.sort_values(["user", "rank"])
    recs = {u: g.item.tolist() for u, g in df.groupby("user")}
    return recs, train_secs, " ".join(cmd)


def run_implicit(args, cfg, seed, train, matched=False):
    from implicit.als import AlternatingLeastSquares
    f, r, a, n = cfg
    if matched:  # implicit: c = alpha*w; recflow: c = 1 + alpha*w (w = 1 here)
        a = 1.0 + a
    uids, uidx = np.unique(train.user.values, return_inverse=True)
    iids, iidx = np.unique(train.item.values, return_inverse=True)
    ui = sp.csr_matrix((np.ones(len(train), dtype=np.float32), (uidx, iidx)),
                       shape=(len(uids), len(iids)))
    model = AlternatingLeastSquares(factors=f, regularization=r, alpha=a, iterations=n,
                                    use_cg=False, use_gpu=False, random_state=seed,
                                    num_threads=args.threads, calculate_training_loss=False)
    t0 = time.time()
    model.fit(ui, show_progress=False)
    secs = time.time() - t0
    users = np.arange(len(uids))
    ids, scores = model.recommend(users, ui, N=args.k, filter_already_liked_items=True)
    recs = {}
    for u, row, srow in zip(users, ids, scores):
        keep = (row >= 0) & np.isfinite(srow)
        recs[int(uids[u])] = [int(iids[i]) for i in row[keep]]
    return recs, secs


def main():
    args = parse_args()
    import implicit
    train, test = load_and_split(args)
    train_path = os.path.abspath(os.path.join(args.out, "train.tsv"))
    train_by_user = {u: set(g) for u, g in train.groupby("user").item}
    test_by_user = {u: set(g) for u, g in test.groupby("user").item}
    print(f"implicit {implicit.__version__}, numpy {np.__version__}; "
          f"{len(train)} train / {len(test)} test pairs, split seed {args.split_seed}, "
          f"threads {args.threads}")

    all_ok = True
    for spec in args.configs:
        f, r, a, n = spec.split(",")
        cfg = (int(f), float(r), float(a), int(n))
        cfg_dir = os.path.abspath(os.path.join(args.out, f"F{f}-R{r}-A{a}-N{n}"))
        os.makedirs(cfg_dir, exist_ok=True)
        print(f"\n== factors={cfg[0]} regularization={cfg[1]} alpha={cfg[2]} iterations={cfg[3]}")
        print(f"{'system':<10}{'seed':>5}{'precision@' + str(args.k):>15}"
              f"{'ndcg@' + str(args.k):>10}{'train_s':>9}{'users':>7}")
        res = {"recflow": [], "implicit": [], "implicit=c": []}
        for seed in args.seeds:
            recs, secs, cmd = run_recflow(args, cfg, seed, train_path, cfg_dir)
            if seed == args.seeds[0]:
                print(f"  $ {cmd}")
            p, nd, nu = evaluate(recs, train_by_user, test_by_user, args.k)
            res["recflow"].append((p, nd, secs))
            print(f"{'recflow':<10}{seed:>5}{p:>15.4f}{nd:>10.4f}{secs:>9.2f}{nu:>7}")
            for name, matched in (("implicit", False), ("implicit=c", True)):
                recs, secs = run_implicit(args, cfg, seed, train, matched)
                p, nd, nu = evaluate(recs, train_by_user, test_by_user, args.k)
                res[name].append((p, nd, secs))
                print(f"{name:<10}{seed:>5}{p:>15.4f}{nd:>10.4f}{secs:>9.2f}{nu:>7}")
        m = {}
        for name, rows in res.items():
            arr = np.array(rows)
            m[name] = arr.mean(axis=0)
            sd = arr.std(axis=0, ddof=1) if len(arr) > 1 else np.zeros(3)
            print(f"{name:<10}{'mean':>5}{m[name][0]:>9.4f}±{sd[0]:.4f}"
                  f"{m[name][1]:>8.4f}±{sd[1]:.4f}{m[name][2]:>7.2f}")
        for ref in ("implicit", "implicit=c"):
            rp = m["recflow"][0] / m[ref][0]
            rn = m["recflow"][1] / m[ref][1]
            ok = rp >= 1 - args.tolerance and rn >= 1 - args.tolerance
            gated = ref == args.gate
            if gated:
                all_ok &= ok
            print(f"ratio recflow/{ref:<10}: precision {rp:.4f}, ndcg {rn:.4f}, "
                  f"train_s {m['recflow'][2] / m[ref][2]:.2f} -> "
                  f"{'within' if ok else 'NOT within'} {args.tolerance:.0%}"
                  f"{' (gate)' if gated else ''}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
