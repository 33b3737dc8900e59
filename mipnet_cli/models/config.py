"""Model configuration: everything needed to rebuild a network, JSON round-trippable."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass(frozen=True)
class StageSpec:
    """One HRNet stage (official `MODEL.EXTRA.STAGEk`)."""

    num_modules: int
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]
    block: str = "BASIC"
    fuse_method: str = "SUM"

    @property
    def num_branches(self) -> int:
        return len(self.num_channels)


def hrnet_stages(width: int, modules: tuple[int, int, int] = (1, 4, 3), blocks: int = 4) -> tuple:
    """The standard HRNet-W<width> stages 2-4 (channels w, 2w, 4w, 8w)."""
    return tuple(
        StageSpec(num_modules=m, num_blocks=(blocks,) * nb,
                  num_channels=tuple(width * 2**i for i in range(nb)))
        for m, nb in zip(modules, (2, 3, 4), strict=True)
    )


@dataclass(frozen=True)
class ModelConfig:
    """A pose network: HRNet, ResNet SimpleBaseline or MoveNet, with or without MIMBs, or the
    single-stage pose regression network ("pfs").

    `image_size` is (height, width); heatmaps are a quarter of it. `num_instances` is the
    number of λ values (people per box); 1 gives the plain single-instance network.
    `se_modules` says where the MIMBs sit: for HRNet before stages 2, 3, 4 and on the stage-4
    output; for ResNet before layer1..layer4; for MoveNet (on the FPN's lateral inputs, on the
    FPN output, before the last six backbone blocks, -). The paper (and official scripts) use
    (False, False, True, True).
    """

    arch: str = "hrnet"
    num_joints: int = 17
    image_size: tuple[int, int] = (256, 192)
    num_instances: int = 2
    se_modules: tuple[bool, bool, bool, bool] = (False, False, True, True)
    se_reduction: int = 4
    final_conv_kernel: int = 1
    # HRNet stem and layer1; the official networks hard-code 64 / 64 / 4 (kept as defaults).
    stem_width: int = 64
    layer1_planes: int = 64
    layer1_blocks: int = 4
    stages: tuple[StageSpec, ...] = field(default_factory=lambda: hrnet_stages(32))
    depth: int = 50
    deconv_filters: tuple[int, ...] = (256, 256, 256)
    deconv_kernels: tuple[int, ...] = (4, 4, 4)
    width_mult: float = 1.0  # MoveNet's MobileNetV2 width (1.0 Lightning, 1.75 Thunder)
    # Single-stage pose regression (arch "pfs"): head width, feature alignment (the refinement
    # cascade), poses kept per image and the lowest pose score kept.
    head_width: int = 64
    feature_align: bool = True
    max_people: int = 50
    score_thresh: float = 0.05
    quality_score: bool = True  # pose score = classification × quality (PSM), else the first
    soft_nms: bool = False  # MoveNet MultiPose: Gaussian soft-NMS of the decoded people
    # MoveNet MultiPose's pose score: "own" (centre × mean confident joint score, as
    # published), "centre" (the centre heatmap alone), "psm" (centre × the PSM's predicted
    # OKS), "psm_only"; "auto": psm with a PSM, else own
    pose_score: str = "auto"
    # The joint confidence at and above which joints are drawn, labelled visible and tracked by
    # default: a heatmap peak for heatmap networks; for the single-stage network every joint
    # carries its pose's score, and training sets this to the F1-best score on validation.
    kpt_thresh: float = 0.3
    name: str = ""

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return (self.image_size[0] // 4, self.image_size[1] // 4)

    @property
    def lambda_dim(self) -> int:
        """Length of the λ vector: 2 (the official one-hot pair) or N for N > 2."""
        return max(2, self.num_instances)

    @property
    def active_se(self) -> tuple[bool, ...]:
        """Where MIMBs are built: nowhere for the single-instance network."""
        return self.se_modules if self.num_instances > 1 else (False,) * 4

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        d = dict(d)
        if "stages" in d:
            d["stages"] = tuple(
                StageSpec(**{**s, "num_blocks": tuple(s["num_blocks"]),
                             "num_channels": tuple(s["num_channels"])})
                for s in d["stages"]
            )
        for key in ("image_size", "se_modules", "deconv_filters", "deconv_kernels"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def config_from_official(cfg: dict, num_instances: int | None = None) -> ModelConfig:
    """A ModelConfig from an official yacs config (as a dict with `MODEL`) or its plain summary.

    Sizes in official configs are [width, height]; ours are (height, width).
    """
    if "MODEL" in cfg:
        model = cfg["MODEL"]
        extra = model.get("EXTRA", {})
        name = model["NAME"]
        summary = {
            "model_name": name, "num_joints": model["NUM_JOINTS"],
            "image_size_wh": model["IMAGE_SIZE"],
            "final_conv_kernel": extra.get("FINAL_CONV_KERNEL", 1),
            "stages": {k: extra[k] for k in ("STAGE2", "STAGE3", "STAGE4") if k in extra},
            "se_modules": model.get("SE_MODULES", [False, False, True, True]),
            "num_layers": extra.get("NUM_LAYERS", 50),
            "deconv_filters": extra.get("NUM_DECONV_FILTERS", [256, 256, 256]),
            "deconv_kernels": extra.get("NUM_DECONV_KERNELS", [4, 4, 4]),
        }
    else:
        summary = cfg
    name = summary["model_name"]
    multi = "lambda" in name
    se = tuple(bool(v) for v in summary.get("se_modules", (False, False, True, True)))
    common = dict(
        num_joints=int(summary["num_joints"]),
        image_size=(int(summary["image_size_wh"][1]), int(summary["image_size_wh"][0])),
        num_instances=num_instances if num_instances is not None else (2 if multi else 1),
        se_modules=se + (False,) * (4 - len(se)),
        se_reduction=int(summary.get("se_reduction", 4)),
        final_conv_kernel=int(summary.get("final_conv_kernel", 1)),
    )
    if "resnet" in name:
        return ModelConfig(
            arch="resnet", depth=int(summary.get("num_layers", 50)),
            deconv_filters=tuple(summary.get("deconv_filters", (256, 256, 256))),
            deconv_kernels=tuple(summary.get("deconv_kernels", (4, 4, 4))), **common)
    stages = tuple(
        StageSpec(num_modules=s["NUM_MODULES"], num_blocks=tuple(s["NUM_BLOCKS"]),
                  num_channels=tuple(s["NUM_CHANNELS"]), block=s["BLOCK"],
                  fuse_method=s.get("FUSE_METHOD", "SUM"))
        for _, s in sorted(summary["stages"].items())
    )
    return ModelConfig(arch="hrnet", stages=stages, **common)
