"""The Feature map: a UMAP of the SAE's decoder directions, coloured by ReasonScore, with clusters
labelled by the corpus tokens their features fire on. Clicking a point opens its feature page.

The layout is the slow part, so it is cached on disk, keyed by a sha256 of the decoder weights and
the layout settings: `<cache>/maps/<key>.npy` (the 2-D points, float32) and `<key>.json` (settings,
cluster of each feature, timings), both written atomically; nothing is pickled. Steps:

1. unit-normalise the decoder rows; exact cosine k-nearest neighbours in chunks of rows (one matmul
   each), handed to umap-learn as `precomputed_knn`, which skips its approximate neighbour search
   and the JIT compilation that search costs on first use;
2. UMAP to 2-D (`n_neighbors` 15, `min_dist` 0.1, seeded, so the same SAE gives the same map);
3. k-means on the 2-D points (about √(d_sae / 8) clusters, 2 to 30);
4. cluster labels (cached beside the layout, per corpus): the tokens carrying most of the cluster's
   activation over the corpus (at most about 12,288 tokens of it, whole texts spread evenly),
   weighted by how specific they are to the cluster (tf-idf-like lift); a cluster whose features
   never fire on those tokens has no label.
"""

from __future__ import annotations

import html
import io
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reasoning_dspy._io import atomic_write_bytes, atomic_write_json
from reasoning_dspy.dashboard.tokens import shown_piece

LAYOUT_VERSION = 1
LABEL_TOKENS = 12_288  # corpus tokens the cluster labels read
Progress = Callable[[float, str], None]


@dataclass
class MapLayout:
    key: str
    xy: np.ndarray  # [d_sae, 2] float32
    clusters: np.ndarray  # [d_sae] int
    n_clusters: int
    params: dict[str, Any]
    seconds: float  # time the layout took when it was computed
    cached: bool  # read from disk this time


@dataclass
class Cluster:
    id: int
    size: int
    words: list[str]
    center: tuple[float, float]
    mean_score: float | None


def layout_key(w_dec: torch.Tensor, params: dict[str, Any]) -> str:
    """sha256 of every byte of the decoder and of the layout settings (16 hex digits)."""
    import hashlib

    w = w_dec.detach().float().cpu().contiguous().numpy()
    h = hashlib.sha256(w.tobytes() + str(w.shape).encode())
    h.update(json.dumps({**params, "version": LAYOUT_VERSION}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def exact_knn(x: torch.Tensor, k: int, *, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Cosine k-nearest neighbours of the rows of `x [n, d]` (unit rows), self included first:
    `(indices [n, k] int32, distances [n, k] float32)` with distance `1 − cos`."""
    n = x.shape[0]
    idx = np.empty((n, k), np.int32)
    dist = np.empty((n, k), np.float32)
    xt = x.T.contiguous()
    with torch.inference_mode():
        for s in range(0, n, chunk):
            sim = x[s : s + chunk] @ xt  # [b, n]
            sim[torch.arange(sim.shape[0]), torch.arange(s, s + sim.shape[0])] = 2.0  # self first, always
            v, i = sim.topk(k, dim=1)
            idx[s : s + chunk] = i.numpy()
            dist[s : s + chunk] = (1.0 - v.clamp(max=1.0)).clamp_min(0.0).numpy()
    return idx, dist


def map_layout(w_dec: torch.Tensor, cache_dir: str | Path, *, n_neighbors: int = 15, min_dist: float = 0.1,
               seed: int = 0, progress: Progress | None = None) -> MapLayout:
    """The 2-D layout of the decoder rows `[d_sae, d_in]`, from the cache when it holds this SAE's."""
    n = int(w_dec.shape[0])
    if n < 3:
        raise ValueError(f"a map needs at least 3 features, the SAE has {n}")
    params = {"n_neighbors": min(n_neighbors, n - 1), "min_dist": min_dist, "seed": seed, "metric": "cosine",
              "n_clusters": _n_clusters(n)}
    key = layout_key(w_dec, params)
    folder = Path(cache_dir) / "maps"
    cached = _load(folder, key, n)
    if cached is not None:
        return cached
    start = time.perf_counter()
    say = progress or (lambda f, m: None)
    x = w_dec.detach().float().cpu()
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    say(0.05, f"nearest neighbours of {n} decoder directions")
    knn_idx, knn_dist = exact_knn(x, params["n_neighbors"])
    say(0.2, "UMAP layout (the first one in a process compiles UMAP's kernels)")
    import umap  # heavy: imported only when a layout is computed

    reducer = umap.UMAP(n_neighbors=params["n_neighbors"], min_dist=min_dist, metric="cosine", random_state=seed,
                        n_components=2, precomputed_knn=(knn_idx, knn_dist, None),
                        init="spectral" if n > 64 else "random")
    with warnings.catch_warnings():  # seeded runs are single-threaded, and a precomputed graph has no search index:
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)  # both are intended
        warnings.filterwarnings("ignore", message="precomputed_knn", category=UserWarning)
        xy = reducer.fit_transform(x.numpy()).astype(np.float32)
    say(0.9, "clusters")
    clusters = _kmeans(xy, params["n_clusters"], seed)
    seconds = time.perf_counter() - start
    buf = io.BytesIO()
    np.save(buf, xy, allow_pickle=False)
    atomic_write_bytes(folder / f"{key}.npy", buf.getvalue())
    atomic_write_json(folder / f"{key}.json", {"format_version": LAYOUT_VERSION, "key": key, "n_features": n,
                                               "params": params, "seconds": round(seconds, 3),
                                               "clusters": clusters.tolist()})
    say(1.0, "map ready")
    return MapLayout(key, xy, clusters, params["n_clusters"], params, seconds, False)


def _n_clusters(n: int) -> int:
    return int(min(30, max(2, round(math.sqrt(n / 8)))))


def _kmeans(xy: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    k = min(k, len(xy))
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(xy).astype(np.int64)


def _load(folder: Path, key: str, n: int) -> MapLayout | None:
    npy, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    if not (npy.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        xy = np.load(npy, allow_pickle=False)
        clusters = np.asarray(meta["clusters"], dtype=np.int64)
    except (OSError, ValueError, KeyError):
        return None  # damaged: computed again
    if meta.get("key") != key or xy.shape != (n, 2) or clusters.shape != (n,):
        return None
    return MapLayout(key, xy.astype(np.float32), clusters, int(meta["params"]["n_clusters"]), meta["params"],
                     float(meta["seconds"]), True)


def cluster_labels(layout: MapLayout, corpus: Any, sae: Any, pieces: list[str], cache_dir: str | Path, *,
                   corpus_key: str, scores: Any = None, n_words: int = 3, max_tokens: int = LABEL_TOKENS,
                   progress: Progress | None = None) -> list[Cluster]:
    """Each cluster's size, centre, mean ReasonScore and its top corpus tokens (cached per layout and corpus).

    A token's weight for cluster c is its share s of c's activation mass times log(1 + s / o), where o
    is the token's share of all clusters' mass: tokens every cluster fires on (" the", line breaks)
    score lower than tokens one cluster is about. The pass reads at most about `max_tokens` corpus
    tokens (whole texts, every k-th one): it encodes each with the whole SAE, the map's second cost."""
    path = Path(cache_dir) / "maps" / f"{layout.key}-labels-{corpus_key}-{max_tokens}.json"
    words: list[list[str]] | None = None
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("key") == layout.key and len(stored["words"]) == layout.n_clusters:
                words = stored["words"]
        except (OSError, ValueError, KeyError):
            words = None
    if words is None:
        mass = corpus.subset(max_tokens).group_token_mass(sae, layout.clusters, layout.n_clusters, len(pieces),
                                                          progress=progress)
        words = _top_words(mass, pieces, n_words)
        atomic_write_json(path, {"key": layout.key, "corpus": corpus_key, "words": words})
    out = []
    score = scores.reason_score.float().numpy() if scores is not None else None
    for c in range(layout.n_clusters):
        members = layout.clusters == c
        if not members.any():
            continue
        center = layout.xy[members].mean(0)
        out.append(Cluster(c, int(members.sum()), words[c], (float(center[0]), float(center[1])),
                           float(score[members].mean()) if score is not None else None))
    return out


def _top_words(mass: torch.Tensor, pieces: list[str], n: int) -> list[list[str]]:
    totals = mass.sum(1)
    if float(totals.sum()) <= 0:
        return [[] for _ in range(mass.shape[0])]
    share = mass / totals[:, None].clamp_min(1e-30)  # [C, V]: a token's share of the cluster's activation
    overall = (mass.sum(0) / totals.sum()).clamp_min(1e-30)  # [V]: its share of all clusters' activation
    weight = share * torch.log1p(share / overall)
    out = []
    for c in range(mass.shape[0]):
        words: list[str] = []
        if totals[c] > 0:
            for t in torch.argsort(weight[c], descending=True)[: 4 * n].tolist():
                if weight[c, t] <= 0:
                    break
                w = shown_piece(pieces[t]).strip()
                if w not in words:
                    words.append(w)
                if len(words) == n:
                    break
        out.append(words)
    return out


def _colour(score: float, lo: float, hi: float) -> str:
    """Grey at 0, red for positive ReasonScore, blue for negative (scaled to the extremes)."""
    if score >= 0:
        t = min(1.0, score / hi) if hi > 0 else 0.0
        r, g, b = 200 + 20 * t, 200 - 170 * t, 200 - 170 * t
    else:
        t = min(1.0, score / lo) if lo < 0 else 0.0
        r, g, b = 200 - 150 * t, 200 - 100 * t, 200 + 30 * t
    return f"#{int(r):02x}{int(g):02x}{int(b):02x}"


def map_html(layout: MapLayout, clusters: list[Cluster], *, scores: Any = None, labels: Any = None,
             highlight: list[int] = (), width: int = 900, height: int = 640) -> str:
    """The map as one SVG: a circle per feature (`data-feature`), cluster labels at cluster centres.

    Colours: ReasonScore (red high, blue negative, grey about 0); the `highlight` features (the
    reasoning features) are drawn larger with a dark ring."""
    xy = layout.xy
    pad = 24
    lo_x, hi_x = float(xy[:, 0].min()), float(xy[:, 0].max())
    lo_y, hi_y = float(xy[:, 1].min()), float(xy[:, 1].max())
    sx = (width - 2 * pad) / max(hi_x - lo_x, 1e-9)
    sy = (height - 2 * pad) / max(hi_y - lo_y, 1e-9)

    def px(x: float, y: float) -> tuple[float, float]:
        return pad + (x - lo_x) * sx, height - pad - (y - lo_y) * sy

    score = scores.reason_score.float().numpy() if scores is not None else None
    lo = float(np.quantile(score, 0.01)) if score is not None else 0.0
    hi = float(np.quantile(score, 0.999)) if score is not None else 0.0
    n = len(xy)
    radius = 2.2 if n > 4000 else 3.5 if n > 500 else 6.0
    order = np.argsort(score) if score is not None else np.arange(n)  # high scores drawn last, on top
    special = set(int(f) for f in highlight)
    parts = [f'<svg class="rd-map" viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg">'
             f'<rect width="{width}" height="{height}" fill="#fcfcfc"/>']
    for i in order.tolist():
        if i in special:
            continue
        x, y = px(*xy[i])
        fill = _colour(float(score[i]), lo, hi) if score is not None else "#9ca3af"
        tip = f"#{i}" + (f" · ReasonScore {score[i]:.3g}" if score is not None else "")
        parts.append(f'<circle class="rd-pt" data-feature="{i}" cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{fill}">'
                     f"<title>{tip}</title></circle>")
    for i in sorted(special):
        x, y = px(*xy[i])
        fill = _colour(float(score[i]), lo, hi) if score is not None else "#9ca3af"
        label = labels.label(i) if labels is not None else f"#{i}"
        parts.append(f'<circle class="rd-pt rd-reasoning" data-feature="{i}" cx="{x:.1f}" cy="{y:.1f}" '
                     f'r="{radius * 2:.1f}" fill="{fill}" stroke="#111" stroke-width="1.2">'
                     f"<title>#{i} · {html.escape(label)} (reasoning feature)</title></circle>")
    for c in clusters:
        if not c.words:
            continue
        x, y = px(*c.center)
        parts.append(f'<text class="rd-cluster" x="{x:.1f}" y="{y:.1f}" text-anchor="middle">'
                     f'{html.escape(" / ".join(c.words))}</text>')
    parts.append("</svg>")
    return "".join(parts)


#: Runs in the browser once the map component loads: a click on a point sends its feature index.
MAP_CLICK_JS = """
element.addEventListener('click', (event) => {
  const point = event.target.closest('[data-feature]');
  if (point) { trigger('click', {feature: parseInt(point.dataset.feature)}); }
});
"""
