"""Generate a small YOLO dataset of city scenes with the classes COCO lacks (stall, rubbish).

Backgrounds are random crops of REAL street footage and photos from ``../shared/assets``
(frames of the two shared videos, street.jpg / bus.jpg, the clean Amsterdam photo). Onto them
we paste procedurally drawn street stalls (canopy + table with goods, sometimes a vendor) and
rubbish (bin bags, cardboard boxes, heaps) plus real rubbish cut from the Amsterdam photos with
a soft elliptical alpha. person / vehicle boxes are pseudo labels from the COCO teacher
(yolo11n_int8.onnx, conf 0.35). Train and val use different seeds and different background
sources / time ranges so the held-out score is not a copy of train.

    python -m simulators.training_scenes OUT_DIR --train 600 --val 150 --seed 0
"""

from __future__ import annotations

import argparse
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

NAMES = ["person", "vehicle", "stall", "rubbish"]
ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
TEACHER_MAP = {"person": 0, "car": 1, "bus": 1, "truck": 1, "motorcycle": 1}
AMS = "images/amsterdam_garbage/"
# Real rubbish crops (image, x1, y1, x2, y2 as fractions of the photo), found by eye.
REAL_RUBBISH = [
    (AMS + "mdc_photo_mdc_0da290_cdv_photo_002_1493144966294.jpg", 0.61, 0.46, 0.96, 0.73),
    (AMS + "mdc_photo_cdv_photo_084_1469560128313.jpg", 0.22, 0.28, 0.81, 0.49),
    (AMS + "mdc_photo_mdc_9f5eba_cdv_photo_001_1493403939557.jpg", 0.07, 0.57, 0.53, 0.89),
    (AMS + "mdc_photo_mdc_c24530_cdv_photo_001_1506182193267.jpg", 0.49, 0.50, 0.93, 0.73),
    (AMS + "mdc_photo_mdc_c24530_cdv_photo_001_1506182193267.jpg", 0.0, 0.60, 0.32, 0.92),
    (AMS + "mdc_photo_mdc_e39d80_cdv_photo_001_1495649759241.jpg", 0.49, 0.58, 0.84, 0.83),
    (AMS + "mdc_photo_mdc_bab5b0_cdv_photo_001_1466704156289.jpg", 0.14, 0.12, 0.34, 0.35),
]


# ---------------------------------------------------------------- backgrounds + teacher labels
def _video_frames(path: Path, t0: float, t1: float, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    lo, hi = int(t0 * fps), min(n - 1, int(t1 * fps))
    frames = []
    for idx in np.linspace(lo, hi, count).astype(int):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(idx))
        ok, frame = cap.read()
        if ok:
            frames.append(frame)
    cap.release()
    return frames


@lru_cache(maxsize=2)
def _backgrounds(split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, teacher boxes [N, 5] = cls, x1, y1, x2, y2) for one split's background pool."""
    soc, car = ASSETS / "videos/socialdist_pedestrians.mp4", ASSETS / "videos/carcounter_street.mp4"
    if split == "train":
        frames = _video_frames(soc, 0.0, 2.6, 14) + _video_frames(car, 0.0, 20.0, 24)
        frames += [cv2.imread(str(ASSETS / "images/street.jpg"))]
    else:  # held out: later time ranges, other photos
        frames = _video_frames(soc, 3.0, 3.8, 4) + _video_frames(car, 22.0, 30.0, 8)
        frames += [cv2.imread(str(ASSETS / "images/bus.jpg"))]
        frames += [
            cv2.imread(str(ASSETS / AMS / "mdc_photo_mdc_b43170_cdv_photo_001_1472583337688.jpg"))
        ]
    from detectors.backends import load_detector

    teacher = load_detector(ASSETS / "models/yolo11n_int8.onnx", conf=0.35)
    out = []
    for frame in frames:
        boxes = [
            (TEACHER_MAP[d.label], *d.box)
            for d in teacher.detect([frame])[0]
            if d.label in TEACHER_MAP
        ]
        out.append((frame, np.array(boxes, np.float32).reshape(-1, 5)))
    return out


@lru_cache(maxsize=1)
def _real_rubbish() -> list[np.ndarray]:
    crops = []
    for name, x1, y1, x2, y2 in REAL_RUBBISH:
        img = cv2.imread(str(ASSETS / name))
        h, w = img.shape[:2]
        crop = img[int(y1 * h) : int(y2 * h), int(x1 * w) : int(x2 * w)]
        scale = 200 / max(crop.shape[:2])
        crops.append(cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    return crops


# ---------------------------------------------------------------- procedural objects (BGRA)
def _bright(rng: np.random.Generator) -> tuple[int, int, int]:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(170, 256)]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _stall(rng: np.random.Generator, w: int) -> np.ndarray:
    """A stall seen from above at an angle: canopy on top, table with goods below it."""
    h = int(w * rng.uniform(0.8, 1.1))
    img = np.zeros((h, w, 4), np.uint8)
    ch = int(h * rng.uniform(0.4, 0.55))  # canopy height in the image
    # table (front of it shows under the canopy)
    ty0, tx0, tx1 = (
        int(ch * 0.8),
        int(w * rng.uniform(0.05, 0.15)),
        int(w * rng.uniform(0.85, 0.95)),
    )
    table_col = tuple(int(c) for c in rng.integers(40, 200, 3))
    cv2.rectangle(img, (tx0, ty0), (tx1, int(h * 0.95)), (*table_col, 255), -1)
    cv2.rectangle(
        img, (tx0, int(h * 0.8)), (tx1, int(h * 0.95)), (*[c // 2 for c in table_col], 255), -1
    )
    for _ in range(rng.integers(6, 20)):  # goods
        gx, gy = (
            rng.integers(tx0 + 3, max(tx0 + 4, tx1 - 3)),
            rng.integers(ch, max(ch + 1, int(h * 0.8))),
        )
        r = max(2, int(w * rng.uniform(0.03, 0.07)))
        col = _bright(rng) if rng.random() < 0.7 else tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.circle(img, (int(gx), int(gy)), r, (*col, 255), -1)
    if rng.random() < 0.5:  # vendor silhouette beside/behind the table
        vx = int(w * rng.choice([0.08, 0.9]))
        vc = tuple(int(c) for c in rng.integers(10, 120, 3))
        cv2.ellipse(img, (vx, int(h * 0.62)), (max(3, w // 12), h // 5), 0, 0, 360, (*vc, 255), -1)
        cv2.circle(img, (vx, int(h * 0.4)), max(3, w // 16), (40, 60, 90, 255), -1)
    # canopy: trapezoid (umbrella / awning seen obliquely), striped or solid
    c1, c2 = _bright(rng), (255, 255, 255) if rng.random() < 0.5 else _bright(rng)
    inset = int(w * rng.uniform(0.0, 0.15))
    poly = np.array([[inset, 0], [w - 1 - inset, 0], [w - 1, ch], [0, ch]], np.int32)
    canopy = np.zeros((h, w), np.uint8)
    cv2.fillPoly(canopy, [poly], 255)
    stripes = rng.random() < 0.6
    n = int(rng.integers(4, 10))
    xs = np.arange(w)[None, :].repeat(h, 0)
    colour = np.where(((xs * n // w) % 2 == 0) | (not stripes), 1, 0)[..., None]
    paint = np.where(colour, np.array(c1), np.array(c2)).astype(np.float32)
    shade = np.linspace(1.1, 0.75, h)[:, None, None]  # lit top, darker front edge
    paint = np.clip(paint * shade, 0, 255)
    m = canopy > 0
    img[m, :3] = paint[m].astype(np.uint8)
    img[m, 3] = 255
    cv2.line(img, (0, ch), (w - 1, ch), (*[int(c * 0.5) for c in c1], 255), max(1, w // 40))
    if rng.random() < 0.5:  # umbrella pole/hub
        cv2.circle(img, (w // 2, ch // 2), max(2, w // 30), (200, 200, 200, 255), -1)
    return img


def _bag(rng: np.random.Generator, w: int) -> np.ndarray:
    h = int(w * rng.uniform(0.7, 1.2))
    img = np.zeros((h, w, 4), np.uint8)
    base = rng.choice([rng.integers(10, 45), rng.integers(80, 140), rng.integers(190, 240)])
    tint = rng.integers(-10, 10, 3)
    col = np.clip(base + tint, 0, 255)
    cv2.ellipse(
        img,
        (w // 2, int(h * 0.58)),
        (w // 2 - 1, int(h * 0.4)),
        0,
        0,
        360,
        (*[int(c) for c in col], 255),
        -1,
    )
    knot = (w // 2 + int(rng.integers(-w // 8, w // 8 + 1)), int(h * 0.14))
    cv2.ellipse(
        img, knot, (max(2, w // 8), max(2, h // 8)), 0, 0, 360, (*[int(c) for c in col], 255), -1
    )
    for _ in range(rng.integers(1, 4)):  # highlights / folds
        hx, hy = rng.integers(w // 5, 4 * w // 5), rng.integers(h // 3, 4 * h // 5)
        hl = int(min(255, base + rng.integers(40, 90)))
        cv2.ellipse(
            img,
            (int(hx), int(hy)),
            (max(1, w // 10), max(1, h // 25)),
            int(rng.integers(0, 180)),
            0,
            360,
            (hl, hl, hl, 255),
            -1,
        )
    img[..., :3] = cv2.GaussianBlur(img[..., :3], (0, 0), max(0.6, w / 60))
    return img


def _box(rng: np.random.Generator, w: int) -> np.ndarray:
    h = int(w * rng.uniform(0.7, 1.1))
    img = np.zeros((h, w, 4), np.uint8)
    brown = np.array([rng.integers(60, 110), rng.integers(120, 160), rng.integers(160, 210)])
    top = int(h * rng.uniform(0.2, 0.35))
    off = int(w * rng.uniform(0.1, 0.25))
    front = np.array([[0, top], [w - 1 - off, top], [w - 1 - off, h - 1], [0, h - 1]], np.int32)
    side = np.array(
        [[w - 1 - off, top], [w - 1, 0], [w - 1, h - 1 - top], [w - 1 - off, h - 1]], np.int32
    )
    lid = np.array([[0, top], [off, 0], [w - 1, 0], [w - 1 - off, top]], np.int32)
    cv2.fillPoly(img, [front], (*[int(c) for c in brown], 255))
    cv2.fillPoly(img, [side], (*[int(c * 0.7) for c in brown], 255))
    cv2.fillPoly(img, [lid], (*[int(min(255, c * 1.2)) for c in brown], 255))
    cv2.line(
        img,
        (off // 2, top // 2),
        (w - 1 - off // 2, top // 2),
        (180, 190, 200, 255),
        max(1, w // 25),
    )
    return img


def _heap(rng: np.random.Generator, w: int) -> np.ndarray:
    h = int(w * 0.7)
    img = np.zeros((h, w, 4), np.uint8)
    for _ in range(rng.integers(3, 6)):
        pw = int(w * rng.uniform(0.3, 0.55))
        part = _bag(rng, pw) if rng.random() < 0.6 else _box(rng, pw)
        ph = part.shape[0]
        if ph >= h:
            continue
        x, y = (
            int(rng.integers(0, w - pw)),
            int(rng.integers(h // 4, h - ph + 1)) if h - ph > h // 4 else 0,
        )
        _composite(img, part, x, y)
    return img


def _real(rng: np.random.Generator, w: int) -> np.ndarray:
    crop = _real_rubbish()[int(rng.integers(0, len(REAL_RUBBISH)))]
    crop = cv2.resize(crop, (w, max(4, int(crop.shape[0] * w / crop.shape[1]))))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    h = crop.shape[0]
    alpha = np.zeros((h, w), np.uint8)
    cv2.ellipse(alpha, (w // 2, h // 2), (int(w * 0.47), int(h * 0.47)), 0, 0, 360, 255, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, w / 25))
    return np.dstack([crop, alpha])


def _composite(dst: np.ndarray, src: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend BGRA `src` onto BGR(A) `dst` at (x, y), clipped."""
    h, w = src.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(dst.shape[1], x + w), min(dst.shape[0], y + h)
    if x1 <= x0 or y1 <= y0:
        return
    s = src[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32)
    a = s[..., 3:4] / 255.0
    d = dst[y0:y1, x0:x1].astype(np.float32)
    d[..., :3] = s[..., :3] * a + d[..., :3] * (1 - a)
    if dst.shape[2] == 4:
        d[..., 3:4] = np.maximum(d[..., 3:4], s[..., 3:4])
    dst[y0:y1, x0:x1] = d.astype(np.uint8)


# ---------------------------------------------------------------- one scene
def _scene(rng: np.random.Generator, pool, imgsz: int) -> tuple[np.ndarray, list[tuple]]:
    frame, teacher = pool[int(rng.integers(0, len(pool)))]
    fh, fw = frame.shape[:2]
    out_w, out_h = imgsz, int(imgsz * rng.choice([0.75, 1.0, 0.5625]))
    frac = rng.uniform(0.45, 1.0)
    cw = int(min(fw, fh * out_w / out_h) * frac)
    ch = int(cw * out_h / out_w)
    cx, cy = int(rng.integers(0, fw - cw + 1)), int(rng.integers(0, fh - ch + 1))
    img = cv2.resize(
        frame[cy : cy + ch, cx : cx + cw], (out_w, out_h), interpolation=cv2.INTER_AREA
    )
    if rng.random() < 0.5:
        img = img[:, ::-1].copy()
        flip = True
    else:
        flip = False
    s = out_w / cw
    labels: list[tuple] = []
    for c, x1, y1, x2, y2 in teacher:
        bx1, by1, bx2, by2 = (x1 - cx) * s, (y1 - cy) * s, (x2 - cx) * s, (y2 - cy) * s
        if flip:
            bx1, bx2 = out_w - bx2, out_w - bx1
        area = (bx2 - bx1) * (by2 - by1)
        cx1, cy1, cx2, cy2 = max(0, bx1), max(0, by1), min(out_w, bx2), min(out_h, by2)
        if cx2 - cx1 < 3 or cy2 - cy1 < 3 or (cx2 - cx1) * (cy2 - cy1) < 0.5 * area:
            continue
        labels.append((int(c), cx1, cy1, cx2, cy2))
    # paste stalls and rubbish on the ground (lower part), bigger when nearer (lower)
    mask = np.zeros((out_h, out_w), np.uint8)  # what pasted objects cover
    objs = []
    n_stall = int(rng.choice([0, 1, 1, 2]))
    n_rub = int(rng.choice([0, 1, 2, 2, 3]))
    for kind in ["stall"] * n_stall + ["rubbish"] * n_rub:
        yb = rng.uniform(0.45, 1.0) * out_h  # bottom of the object
        persp = 0.5 + yb / out_h
        if kind == "stall":
            w = int(rng.uniform(0.14, 0.32) * out_w * persp)
            obj = _stall(rng, w)
        else:
            w = int(rng.uniform(0.06, 0.18) * out_w * persp)
            maker = rng.choice([_bag, _bag, _box, _heap, _real, _real])
            obj = maker(rng, max(8, w))
        objs.append((kind, obj, yb))
    objs.sort(key=lambda o: o[2])  # far first
    for kind, obj, yb in objs:
        gain = rng.uniform(0.7, 1.2)
        obj[..., :3] = np.clip(obj[..., :3].astype(np.float32) * gain, 0, 255).astype(np.uint8)
        h, w = obj.shape[:2]
        x, y = int(rng.integers(-w // 5, out_w - 4 * w // 5)), int(yb) - h
        # soft shadow beneath
        shadow = np.zeros((h // 3 + 2, w, 4), np.uint8)
        cv2.ellipse(shadow, (w // 2, h // 6 + 1), (w // 2, h // 6), 0, 0, 360, (0, 0, 0, 90), -1)
        _composite(img, shadow, x + w // 10, y + h - h // 6)
        layer = np.zeros((out_h, out_w, 4), np.uint8)
        _composite(layer, obj, x, y)
        _composite(img, obj, x, y)
        vis = layer[..., 3] > 127
        ys, xs = np.nonzero(vis & (mask == 0))
        mask |= vis.astype(np.uint8)
        if len(xs) < 30:
            continue
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        if x2 - x1 < 5 or y2 - y1 < 5:
            continue
        labels.append((NAMES.index(kind), float(x1), float(y1), float(x2), float(y2)))
    # drop teacher labels mostly hidden by pasted objects; drop objects hidden by later pastes
    kept = []
    for lab in labels:
        c, x1, y1, x2, y2 = lab
        sub = mask[int(y1) : int(y2), int(x1) : int(x2)]
        if c < 2 and sub.size and sub.mean() > 0.5:
            continue
        kept.append(lab)
    return _jitter(rng, img), kept


def _jitter(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32)
    f = (f - 128) * rng.uniform(0.7, 1.3) + 128 + rng.uniform(-35, 35)
    if rng.random() < 0.3:
        f += rng.normal(0, rng.uniform(2, 9), f.shape)
    img = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < 0.25:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.4))
    if rng.random() < 0.3:
        q = int(rng.integers(20, 60))
        img = cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], 1)
    return img


def _write_split(root: Path, split: str, n: int, seed: int, imgsz: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    pool = _backgrounds(split)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(NAMES, 0)
    for i in range(n):
        img, labels = _scene(rng, pool, imgsz)
        h, w = img.shape[:2]
        cv2.imwrite(
            str(root / "images" / split / f"{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92]
        )
        lines = []
        for c, x1, y1, x2, y2 in labels:
            counts[NAMES[c]] += 1
            lines.append(
                f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            )
        (root / "labels" / split / f"{i:05d}.txt").write_text(
            "\n".join(lines) + "\n" if lines else ""
        )
    return counts


def write_dataset(out_dir: Path, n_train: int, n_val: int, seed: int, imgsz: int = 320) -> Path:
    """Write images/labels for train and val under ``out_dir`` and return its data.yaml."""
    out_dir = Path(out_dir)
    stats = {}
    if n_train:
        stats["train"] = _write_split(out_dir, "train", n_train, seed, imgsz)
    stats["val"] = _write_split(out_dir, "val", n_val, seed + 100_003, imgsz)
    data = out_dir / "data.yaml"
    data.write_text(
        f"path: {out_dir.resolve()}\ntrain: images/train\nval: images/val\n"
        f"names:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(NAMES)),
        encoding="utf-8",
    )
    (out_dir / "stats.txt").write_text(repr(stats) + "\n", encoding="utf-8")
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--train", type=int, default=600)
    ap.add_argument("--val", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--imgsz", type=int, default=320)
    a = ap.parse_args()
    print(write_dataset(a.out_dir, a.train, a.val, a.seed, a.imgsz))


if __name__ == "__main__":
    main()
