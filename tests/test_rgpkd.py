import itertools
import json
import math

import pytest
import torch
from conftest import tiered

from pagmfr.backbones import BACKBONES
from pagmfr.cli import main
from pagmfr.config import Config
from pagmfr.engine import (
    anomaly_metrics,
    fit,
    infer,
    load_checkpoint,
    make_scheduler,
    prepare_training,
    seed_everything,
)
from pagmfr.models import build_model
from pagmfr.models.rgpkd import PromptBank, select_bank_entries
from pagmfr.study.presets import QUICK_TRAINING

SIZE = 64


def _config(**overrides):
    return Config().with_overrides({**QUICK_TRAINING, "method": "rgpkd", **overrides})


def _images(seed=0, count=4):
    return torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("student", "prompts", "reconstruction"),
    tiered(
        list(itertools.product(["unet", "symmetric"], [True, False], [True, False])),
        quick=[("unet", True, True), ("symmetric", False, False)],
    ),
)
def test_every_switch_trains_and_the_teacher_stays_frozen(student, prompts, reconstruction):
    config = _config(
        **{
            "rgpkd.student": student,
            "rgpkd.prompts": prompts,
            "rgpkd.reconstruction": reconstruction,
        }
    )
    model = build_model(config)
    assert (model.bank is None) == (not prompts)
    model.prepare([_images(1), _images(2)])
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for step in range(2):
        loss, parts = model.training_loss({"image": _images(step), "index": torch.arange(4)})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert ("image_ssim" in parts) == reconstruction and "distillation" in parts
    assert all(p.grad is not None for p in model.student.parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.teacher.parameters())
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key  # bit-identical, statistics too
    model.eval()
    with torch.no_grad():
        anomaly_map, score = model.predict(_images(9))
    assert anomaly_map.shape == (4, 1, SIZE, SIZE) and score.shape == (4,)
    assert torch.isfinite(anomaly_map).all()  # z-scores (rgpkd.map_norm): any sign


def test_the_student_differs_from_the_teacher_by_design():
    model = build_model(_config(**{"rgpkd.student": "unet"}))
    assert sum(p.numel() for p in model.student.parameters()) != sum(
        p.numel() for p in model.teacher.parameters()
    )
    assert hasattr(model.student, "encoder")  # asymmetric: its own encoder sees the image


@pytest.mark.parametrize("bottleneck", ["plain", "one_class"])
def test_the_symmetric_student_decodes_from_its_bottleneck_code(bottleneck):
    model = build_model(_config(**{"rgpkd.student": "symmetric", "rgpkd.bottleneck": bottleneck}))
    model.prepare([_images(1)])
    teacher = model.teacher(_images())
    code = model.student.bottleneck(teacher)
    deepest = teacher[-1]
    if bottleneck == "one_class":  # OCBE: twice the width at half the resolution, half the values
        assert code.shape[1:] == (2 * deepest.shape[1], *(n // 2 for n in deepest.shape[-2:]))
    else:
        assert code.shape == deepest.shape
    loss, _ = model.training_loss({"image": _images(), "index": torch.arange(4)})
    loss.backward()
    assert all(p.grad is not None for p in model.student.bottleneck.parameters())


def test_bank_respects_its_size_and_memory_bounds():
    channels = BACKBONES["efficientnet_lite0"].channels  # the default backbone, layers 1-3
    per_entry = (channels[0] * 16 * 16 + channels[1] * 8 * 8 + channels[2] * 4 * 4) * 2  # float16
    model = build_model(_config(**{"rgpkd.bank_max_mb": 3.5 * per_entry / 2**20}))
    model.prepare([_images(0, 8), _images(1, 8)])
    assert model.bank.size == 3
    stored = sum(getattr(model.bank, f"scale{i}").nbytes for i in range(3))
    assert stored <= 3.5 * per_entry
    small = build_model(_config(**{"rgpkd.bank_size": 2}))
    small.prepare([_images(0, 8)])
    assert small.bank.size == 2


def test_retrieval_returns_the_most_similar_entry_and_skips_itself_in_training():
    bank = PromptBank(1)
    keys = torch.eye(4)
    bank.fill(keys, [torch.arange(4.0).view(4, 1, 1, 1)])
    query = torch.nn.functional.normalize(
        torch.tensor([[0.1, 0.9, 0.3, 0.0], [0.0, 0.2, 0.1, 0.95]]), dim=1
    )
    assert bank.retrieve(query, topk=1).tolist() == [[1], [3]]
    assert bank.retrieve(keys[[2]], topk=1).tolist() == [[2]]
    assert bank.retrieve(keys[[2]], topk=1, exclude=torch.tensor([2])).tolist() != [[2]]
    # by identity, whatever the precision: a bf16 query of the image itself is still excluded
    near = keys[[2]].bfloat16().float() * 0.999995
    assert bank.retrieve(near, topk=2, exclude=torch.tensor([2])).flatten().tolist().count(2) == 0
    assert bank.entries(torch.tensor([[3]]))[0].flatten().tolist() == [3.0]


def test_coreset_sampling_covers_every_cluster():
    centres = torch.nn.functional.normalize(
        torch.randn(4, 16, generator=torch.Generator().manual_seed(0)), dim=1
    )
    keys = torch.nn.functional.normalize(
        centres.repeat_interleave(10, 0) + 0.01 * torch.randn(40, 16), dim=1
    )
    chosen = select_bank_entries(keys, 4, "coreset", seed=0)
    assert sorted(set((chosen // 10).tolist())) == [0, 1, 2, 3]


def test_the_retrieved_prompts_change_the_prediction():
    config = _config()
    model = build_model(config)
    model.eval()
    with torch.no_grad():
        model.prepare([_images(3)])
        with_bank = model.predict(_images(4))[0]
        model.prepare([1.0 - _images(3)])  # another bank: other prompts for the same inputs
        with_other_bank = model.predict(_images(4))[0]
    assert not torch.allclose(with_bank, with_other_bank)


@pytest.mark.parametrize(("layers", "combine"), [("1,2,3", "sum"), ("1,2,3", "max"), ("2", "max")])
def test_the_map_combines_the_kept_scales(layers, combine):
    model = build_model(
        _config(
            **{
                "rgpkd.map_scales": "drop_deepest",
                "rgpkd.map_combine": combine,
                "rgpkd.map_norm": "none",
                "backbone.layers": layers,
            }
        )
    ).eval()
    model.prepare([_images(3)])
    with torch.no_grad():
        teacher, student, _ = model(_images(4))
        scales = model.scale_maps(teacher, student, (SIZE, SIZE))
        combined = model.anomaly_map(teacher, student, (SIZE, SIZE))
    kept = scales[:, :-1] if scales.shape[1] > 1 else scales  # one scale is kept
    expected = kept.sum(dim=1, keepdim=True) if combine == "sum" else kept.amax(1, keepdim=True)
    torch.testing.assert_close(combined, expected)


def test_the_bank_travels_in_the_checkpoint(tmp_path):
    model = build_model(_config())
    model.prepare([_images(5)])
    torch.save({"model": model.state_dict()}, tmp_path / "ckpt.pt")
    fresh = build_model(_config(), load_weights=False)
    fresh.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["model"])
    model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.predict(_images(6))[0], fresh.predict(_images(6))[0])


def test_rgpkd_warms_up_then_decays_linearly_by_default():
    config = _config(**{"train.epochs": 6, "train.warmup_epochs": 2})
    assert config.scheduler == "warmup_linear" and Config().scheduler == "cosine"
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(optimizer, config)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25])


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["pixel", "global"])
def test_calibration_z_scores_the_clean_training_images_under_the_current_student(norm):
    config = _config(**{"data.category": "coins", "rgpkd.map_norm": norm})
    setup = prepare_training(config)
    model = build_model(config)
    model.prepare(setup.clean_batches(8))
    model.eval()
    model.calibrate(setup.clean_batches(8))
    with torch.no_grad():
        images = torch.cat(list(setup.clean_batches(8)))
        own = torch.arange(images.shape[0])  # as training, no image retrieves its own prompt
        teacher, student, _ = model(images, own)
        z = model.stats.normalise(model.scale_maps(teacher, student, images.shape[-2:]))
    # per scale (and pixel): mean 0 and (floored) std at most 1 over the training images
    dims = (0,) if norm == "pixel" else (0, 2, 3)
    assert z.mean(dim=dims).abs().max() < 1e-2
    assert z.std(dim=dims, unbiased=False).max() < 1.01  # float32 E[x²] - E[x]²
    batch = {"image": images[:8], "index": own[:8]}
    before = model.stats.mean.clone()
    model.train()
    model.training_loss(batch)[0].backward()
    assert torch.equal(model.stats.mean, before)  # training steps leave the statistics alone


def test_short_training_lowers_the_loss_and_beats_the_untrained_student(tmp_path):
    config = _config(**{"data.category": "coins", "train.epochs": 6})
    seed_everything(config.train.seed)
    setup = prepare_training(config)
    untrained = build_model(config)
    untrained.prepare(setup.clean_batches(8))
    untrained.eval()
    untrained.calibrate(setup.clean_batches(8))  # as fit does before every validation
    maps, scores = infer(untrained, [setup.images], torch.device("cpu"))
    before = anomaly_metrics(maps, setup.masks, scores, setup.labels)
    result = fit(config, tmp_path, callbacks=())
    assert result.history[-1]["loss"] < 0.7 * result.history[0]["loss"]
    # with ImageNet EfficientNet-Lite0 at 64 px the untrained student's calibrated map is
    # near chance (pixel AUROC 0.59, AU-PRO 0.15); six epochs lift it to 0.63 and 0.25
    assert result.best_metrics["val_pixel_auroc"] > before["pixel_auroc"] + 0.03
    assert result.best_metrics["val_au_pro"] > before["au_pro"] + 0.05
    assert load_checkpoint(result.best_checkpoint)["model"]["bank.keys"].shape[0] > 0


@pytest.mark.slow
def test_cli_end_to_end_with_method_rgpkd(tmp_path, quick_train_args):
    out = tmp_path / "run"
    args = quick_train_args("coffee", out, "--method", "rgpkd", "--batch-size", "8")
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["method"] == "rgpkd"
    assert all(
        0.0 <= metrics[k] <= 1.0 for k in ("image_auroc", "pixel_auroc", "au_pro", "pixel_f1_max")
    )
    best = out / "checkpoints" / "rgpkd_coffee_best.pt"
    assert main(["evaluate", "--checkpoint", str(best), "--out", str(tmp_path / "eval")]) == 0
    image = next((out / "heatmaps" / "missing").glob("*.png"))
    assert (
        main(["predict", "--checkpoint", str(best), str(image), "--out", str(tmp_path / "pred")])
        == 0
    )
    assert math.isfinite(json.loads((tmp_path / "pred" / "scores.json").read_text())[0]["score"])
