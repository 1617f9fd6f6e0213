"""The numpy peer of `lorascope stats`: the same factored QR + SVD per delta, in f64.

Reads a safetensors file by hand (header + numpy views), handles 2D pairs and PEFT's packed
per-expert pairs, and prints the number of deltas and the seconds spent (load + compute).
Run with OPENBLAS_NUM_THREADS=1: numpy's thin QRs were ~100x slower with 2 threads here.
"""
import json
import re
import sys
import time

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": np.uint16}


def load(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = int.from_bytes(buf[:8], "little")
    header = json.loads(buf[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        a = np.frombuffer(buf, dtype=DTYPES[t["dtype"]], count=(e - b) // np.dtype(DTYPES[t["dtype"]]).itemsize, offset=base + b)
        if t["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a.reshape(t["shape"])
    return out


def spectrum(b, a, s):
    _, rb = np.linalg.qr(b.astype(np.float64))
    _, ra = np.linalg.qr(a.T.astype(np.float64))
    return abs(s) * np.linalg.svd(rb @ ra.T, compute_uv=False)


def main(folder):
    t0 = time.perf_counter()
    cfg = json.load(open(f"{folder}/adapter_config.json"))
    tensors = load(f"{folder}/adapter_model.safetensors")
    r_cfg, alpha = cfg["r"], cfg["lora_alpha"]
    rank_pattern = cfg.get("rank_pattern") or {}
    results = []
    for name in sorted(tensors):
        if not name.endswith("lora_A.weight"):
            continue
        a = tensors[name]
        b = tensors[name.replace("lora_A", "lora_B")]
        module = name[: -len(".lora_A.weight")]
        if re.search(r"experts(\.base_layer)?$", module):
            r = next((v for k, v in rank_pattern.items() if re.match(rf"(.*\.)?({k})$", module.replace(".base_layer", ""))), r_cfg)
            e_n = a.shape[0] // r
            for e in range(e_n):
                results.append(spectrum(b[:, e::e_n], a[e * r : (e + 1) * r], alpha / r))
        else:
            r = a.shape[0]
            results.append(spectrum(b, a, alpha / r))
    dt = time.perf_counter() - t0
    print(json.dumps({"deltas": len(results), "seconds": dt}))


if __name__ == "__main__":
    main(sys.argv[1])
