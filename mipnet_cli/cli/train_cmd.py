"""`mipnet train` and `mipnet eval`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..annotate.images import load_estimator
from ..core.errors import MipnetError
from ..core.files import check_outputs, write_json
from ..data import KeypointDataset
from ..detect.sources import DetectorBoxes
from ..pose.engine import EngineOptions
from . import options as opt
from .app import TRAIN, app, console, say


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.3e}  {task.fields[rate]:.1f} samples/s"),
                    TimeRemainingColumn(), console=console, transient=True)


@app.command(rich_help_panel=TRAIN)
def train(
    config: Path | None = typer.Argument(None, help="TOML training config (see configs/)"),
    set_: list[str] = typer.Option([], "--set", help="override a setting: --set lr=5e-4"),
    out: Path | None = typer.Option(None, help="run folder (default: the config's out_dir)"),
    epochs: int | None = typer.Option(None, help="number of epochs"),
    batch_size: int | None = typer.Option(None, help="samples per step (per process)"),
    resume: bool = typer.Option(False, help="continue the run in the output folder exactly"),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 (default: auto)"),
) -> None:
    """Train a pose network (multi-instance or single-stage) from a config.

    Top-down archs train on the person crops of a COCO-format keypoint dataset; a config whose
    arch is single-stage (pfs_*) trains that network on whole images instead.

    Writes last/best checkpoints (mipnet format), state.pt for --resume, log.jsonl and
    curves.png to the run folder. Multi-GPU: `torchrun --nproc-per-node 8 -m mipnet_cli train ...`.
    """
    from ..train.heatmap import TrainConfig, Trainer
    from ..train.multipose import is_multipose_config
    from ..train.pfs import is_pfs_config

    overrides = list(set_)
    for key, value in (("out_dir", out), ("epochs", epochs), ("batch_size", batch_size)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(str(value)) if key == 'out_dir' else value}")
    if is_pfs_config(config, overrides):
        _train_pfs(config, overrides, resume, device)
        return
    if is_multipose_config(config, overrides):
        _train_multipose(config, overrides)
        return
    cfg = TrainConfig.load(config, overrides)
    trainer = Trainer(cfg, device=device, console=console)
    if resume:
        trainer.resume()
        console.print(f"resumed at epoch {trainer.epoch} from {trainer.state_path}")
    if trainer.rank == 0:
        if trainer.init_report:
            loaded, fresh, neutral = trainer.init_report
            console.print(f"initialised {loaded} tensors from {cfg.init}; {fresh} start fresh"
                          + (" (MIMBs as the identity)" if neutral else ""))
        console.print(f"training {cfg.arch} N={cfg.instances} on {len(trainer.train_set)} "
                      f"samples ({trainer.keypoints.name}) on {trainer.device}, "
                      f"{trainer.world} process(es)")
    with _progress() as progress:
        history = trainer.fit(progress)
    if trainer.rank == 0 and history:
        last = history[-1]
        ap = f", val AP {last['val']['merged']['AP']:.3f}" if "val" in last else ""
        say("done:", "green", f"epoch {last['epoch']}, loss {last['loss']:.3e}{ap}; "
            f"checkpoints in {trainer.out}", stderr=False)


def _train_pfs(config: Path | None, overrides: list[str], resume: bool,
                      device: str | None) -> None:
    """`mipnet train` for a single-stage config."""
    from ..train.pfs import PfsTrainConfig, PfsTrainer

    cfg = PfsTrainConfig.load(config, overrides)
    trainer = PfsTrainer(cfg, device=device)
    if resume:
        trainer.resume()
        console.print(f"resumed at epoch {trainer.epoch} from {trainer.state_path}")
    if trainer.init_report:
        console.print(f"initialised {trainer.init_report}; the rest starts fresh")
    console.print(f"training {cfg.arch} (single stage, quality {cfg.quality}) on "
                  f"{len(trainer.train_set)} images ({trainer.keypoints.name}) on "
                  f"{trainer.device}")
    with _progress() as progress:
        history = trainer.fit(progress)
    if history:
        last = history[-1]
        ap = f", val AP {last['val']['merged']['AP']:.3f}" if "val" in last else ""
        say("done:", "green", f"epoch {last['epoch']}, loss {last['loss']:.3e}{ap}; "
            f"checkpoints in {trainer.out}", stderr=False)


def _train_multipose(config: Path | None, overrides: list[str]) -> None:
    """`mipnet train` for the cascade on a frozen MoveNet MultiPose (its reruns reuse the
    cached people of the run folder, so --resume has nothing to add)."""
    from ..train.multipose import MultiPoseTrainConfig, MultiPoseTrainer

    cfg = MultiPoseTrainConfig.load(config, overrides)
    trainer = MultiPoseTrainer(cfg)
    parts = [name for name, on in (("refinement", cfg.refine), ("PSM", cfg.psm)) if on]
    console.print(f"training the {' and '.join(parts)} of a frozen MoveNet MultiPose "
                  f"({cfg.init}, input {cfg.input_size}) on {cfg.train_ann}")
    with Progress(console=console, transient=True) as progress:
        history = trainer.fit(progress)
    last = history[-1]
    ap = f", val AP {last['val']['AP']:.3f}" if "val" in last else ""
    say("done:", "green", f"epoch {last['epoch']}{ap}; checkpoints in {trainer.out}",
        stderr=False)


def _score_results_file(ann: Path, results_path: Path, keypoints: str | None) -> dict:
    """Metrics of an existing COCO keypoint results file against `ann`."""
    from ..core.keypoints import get_keypoint_set, keypoint_set_for
    from ..evaluate.coco import coco_keypoint_metrics, crowdpose_metrics

    try:
        results = json.loads(results_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MipnetError(f"{results_path}: not a readable JSON results file ({exc})") from None
    if not isinstance(results, list) or not all(
            isinstance(r, dict) and "keypoints" in r and "image_id" in r for r in results):
        raise MipnetError(f"{results_path}: expected a COCO keypoint results list "
                          "[{image_id, category_id, keypoints, score}, ...]")
    joints = len(results[0]["keypoints"]) // 3 if results else 17
    kps = get_keypoint_set(keypoints) if keypoints else keypoint_set_for(joints)
    metric = crowdpose_metrics if kps.name == "crowdpose" else coco_keypoint_metrics
    return metric(ann, results, kps)


def _detections(ann: Path, images: Path, detector: str | None, detector_weights: Path | None,
                det_thresh: float, det_sizes: tuple[int, ...] | None, device: str | None,
                out: Path) -> tuple[dict, DetectorBoxes]:
    """Run a person detector (see `mipnet predict`) over the images of `ann`, write its COCO
    detection file to `out`; its person-box metrics, and the detector."""
    from ..core.hardware import pick_device
    from ..detect.sources import detector_boxes
    from ..train.detector import box_metrics, detect_dataset

    source = detector_boxes(detector, detector_weights, det_thresh, 0.5, pick_device(device),
                            det_sizes)
    data, dets = detect_dataset(source.detector, ann, images)
    write_json(out, dets)
    return box_metrics(data, dets), source


@app.command("eval", rich_help_panel=TRAIN)
def evaluate(
    ann: Path = typer.Argument(..., help="COCO-format annotation file (COCO, OCHuman, CrowdPose)"),
    images: Path | None = typer.Argument(None, help="image folder (not needed with --results)"),
    weights: str | None = typer.Option(None, help="checkpoint path or zoo name"),
    boxes: Path | None = typer.Option(None, help="detection file (default: ground-truth boxes)"),
    detector: opt.Detector = None,
    detector_weights: opt.DetectorWeights = None,
    det_thresh: float = typer.Option(0.05, min=0.0, max=1.0,
                                     help="minimum box score with --detector/--detect"),
    det_size: opt.DetSize = None,
    detect: bool = typer.Option(False, "--detect", help="boxes from the default detector "
                                                        "(as `mipnet predict` picks it)"),
    results: Path | None = typer.Option(None, help="score this COCO keypoint results file "
                                                   "(no network is run)"),
    keypoints: str | None = typer.Option(None, help="keypoint set of --results (default: "
                                                    "from the joint count)"),
    flip: bool = typer.Option(True, help="flip test"),
    input_size: opt.InputSize = None,
    max_people: opt.MaxPeople = None,
    recover: opt.Recover = None,
    recover_weights: opt.RecoverWeights = None,
    instances: opt.Instances = None,
    instance_decay: float = typer.Option(
        0.5, min=0.0, max=1.0, help="box-score factor of secondary instances"),
    sweep: bool = typer.Option(False, help="AP at detector-confidence thresholds 0.0..0.9"),
    batch_size: int = typer.Option(32, min=1, help="person crops per network call"),
    device: str | None = typer.Option(None),
    json_out: Path | None = typer.Option(None, "--json", help="write metrics and results here"),
    plot: Path | None = typer.Option(None, help="sweep plot (PNG)"),
) -> None:
    """Evaluate a pose network on a COCO-format set (merged and per-instance AP).

    Boxes from the ground truth, a detection file or a detector; optionally the confidence
    sweep. With --results, score an existing results file instead."""
    import tempfile

    from ..evaluate.predictions import (
        confidence_sweep,
        evaluate_predictions,
        merged_results,
        predict_dataset,
        recover_results,
        score_results,
    )

    check_outputs({"--json": json_out, "--plot": plot},
                  inputs=[p for p in (ann, results, boxes, detector_weights) if p is not None])
    if results is not None:
        if any(v is not None for v in (weights, boxes, detector, detector_weights)) or detect:
            raise MipnetError("--results is scored as it is: leave out the network and boxes")
        metrics = {"results": _score_results_file(ann, results, keypoints)}
        _metrics_table(f"{ann.name}: {results.name}", metrics)
        if json_out:
            write_json(json_out, {"metrics": _plain(metrics)})
            console.print(f"wrote {json_out}")
        return
    if images is None:
        raise MipnetError("give the image folder (or --results FILE to score a results file)")
    runs_detector = detect or detector is not None or detector_weights is not None
    if boxes is not None and runs_detector:
        raise MipnetError("a box file and a detector are two box sources: give only one")
    det_sizes = opt.parse_det_sizes(det_size)
    if det_sizes is not None and not runs_detector:
        raise MipnetError("--det-size sets the detector's input size: add --detect (or "
                          "--detector)")
    est = load_estimator(
        weights, EngineOptions(flip_test=flip, instances=instances, instance_decay=instance_decay,
                               input_size=input_size, max_people=max_people),
        device, recover=recover, recover_weights=recover_weights)
    if est.model.whole_image:
        if runs_detector or boxes is not None or sweep:
            raise MipnetError("this is a single-stage network: it finds the people itself; "
                              "leave out --boxes, --detector, --detect and --sweep")
        _evaluate_scenes(est, ann, images, json_out)
        return
    report: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        source, found_by = "GT", None
        if runs_detector:
            boxes = Path(tmp) / "detections.json"
            report["boxes"], found_by = _detections(ann, images, detector, detector_weights,
                                                    det_thresh, det_sizes, device, boxes)
            source = "detector"
            _metrics_table(f"{ann.name}: person boxes (score >= {det_thresh})",
                           {"detector": report["boxes"]})
        elif boxes is not None:
            source = "detections"
        h, w = est.input_size
        dataset = KeypointDataset(ann, images, est.keypoint_set, image_size=(h, w),
                                  heatmap_size=(h // 4, w // 4), num_instances=1, train=False,
                                  boxes=boxes)
        with Progress(console=console, transient=True) as progress:
            preds = predict_dataset(est, dataset, batch_size, progress=progress)
    opt.model_notices(weights, found_by, detector)
    metrics = evaluate_predictions(preds, est, dataset)
    labels = {"merged": "merged (all λ)", "instance0": "λ=[1,0] only", "instance1": "λ=[0,1] only"}
    if est.recovery is not None:
        with Progress(console=console, transient=True) as progress:
            recovered = recover_results(merged_results(preds, est), est, str(ann), str(images),
                                        progress=progress)
        metrics["recovered"] = score_results(str(ann), recovered, est.keypoint_set)
        labels["recovered"] = "merged + --recover"
    _metrics_table(f"{ann.name}: {len(dataset)} boxes ({source})",
                   {labels.get(k, k): m for k, m in metrics.items()})
    report["metrics"] = _plain(metrics)
    if sweep:
        rows = confidence_sweep(preds, est, dataset)
        sweep_table = Table(title="detector-confidence sweep")
        sweep_table.add_column("min box score")
        sweep_table.add_column("AP", justify="right")
        for t, m in rows:
            sweep_table.add_row(f"{t:.1f}", f"{m['AP']:.3f}")
        console.print(sweep_table)
        report["sweep"] = [{"threshold": t, "AP": m["AP"]} for t, m in rows]
        if plot:
            _plot_sweep(report["sweep"], plot)
    if json_out:
        report["results"] = recovered if est.recovery is not None else merged_results(preds, est)
        write_json(json_out, report)
        console.print(f"wrote {json_out}")


def _evaluate_scenes(est, ann: Path, images: Path, json_out: Path | None) -> None:
    """`mipnet eval` of a whole-image (single-stage) network: every image, no boxes."""
    from ..data.dataset import infer_keypoint_set, load_coco_json
    from ..evaluate.predictions import predict_scenes, score_results

    kps = infer_keypoint_set(load_coco_json(ann), ann)
    if kps.num_joints != est.keypoint_set.num_joints:
        raise MipnetError(f"{ann}: {kps.num_joints}-joint annotations; the network predicts "
                          f"{est.keypoint_set.num_joints} joints")
    with Progress(console=console, transient=True) as progress:
        results = predict_scenes(est, str(ann), str(images), progress=progress)
    metrics = {"single stage": score_results(str(ann), results, est.keypoint_set)}
    _metrics_table(f"{ann.name}: whole images (no boxes)", metrics)
    if json_out:
        write_json(json_out, {"metrics": _plain(metrics), "results": results})
        console.print(f"wrote {json_out}")


def _plain(metrics: dict[str, dict]) -> dict[str, dict]:
    return {k: {n: v for n, v in m.items() if n != "log"} for k, m in metrics.items()}


def _metrics_table(title: str, metrics: dict[str, dict]) -> None:
    """One row per metric, one column per variant (merged, each λ, ...): every figure stays
    whole in an 80-column terminal or a log file."""
    names = [k for k in next(iter(metrics.values())) if k != "log"]
    table = Table(title=title)
    table.add_column("metric")
    for key in metrics:
        table.add_column(key, justify="right", no_wrap=True)
    for n in names:
        table.add_row(n, *(f"{m[n]:.3f}" for m in metrics.values()))
    console.print(table)


def _plot_sweep(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.files import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot([r["threshold"] for r in rows], [r["AP"] for r in rows], "o-")
    ax.set_xlabel("detector confidence threshold")
    ax.set_ylabel("AP")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
