import pickle

import cv2
import noise
import numpy as np
import pytest

from pagmfr.anomalies import (
    PerlinMaskSampler,
    available_strategies,
    foreground_mask,
    make_generator,
    paste,
    perlin_field,
    register_strategy,
)
from pagmfr.anomalies.preview import default_image
from pagmfr.anomalies.sources import load_textures
from pagmfr.cli import main
from pagmfr.data.images import read_rgb, write_png

SIZE = 96


@pytest.fixture(scope="module")
def texture_image():
    return default_image("texture", SIZE)


@pytest.fixture(scope="module")
def object_image():
    """A synthetic object: a bright disc with some structure on a plain dark background."""
    image = np.full((SIZE, SIZE, 3), 30, np.uint8)
    cv2.circle(image, (SIZE // 2, SIZE // 2), SIZE // 4, (200, 170, 90), -1)
    cv2.circle(image, (SIZE // 2, SIZE // 2), SIZE // 10, (120, 60, 40), -1)
    return image


@pytest.mark.parametrize(
    ("cells", "shape"), [((2, 2), (32, 32)), ((4, 2), (48, 64)), ((32, 8), (128, 96))]
)
def test_perlin_field_equals_the_noise_package(cells, shape):
    height, width = shape
    field = perlin_field(height, width, cells)
    reference = np.array(
        [
            [
                noise.pnoise2(
                    c * cells[0] / width, r * cells[1] / height, repeatx=cells[0], repeaty=cells[1]
                )
                for c in range(width)
            ]
            for r in range(height)
        ]
    )
    np.testing.assert_allclose(field, reference, atol=1e-5)


def test_perlin_fields_are_periodic():
    """Across the wrap the field is as smooth as anywhere, so toroidal shifts leave no seam."""
    field = perlin_field(64, 64, (4, 4), np.random.default_rng(3).permutation(256))
    for axis in (0, 1):
        wrapped = np.abs(np.diff(field, axis=axis, append=np.take(field, [0], axis=axis)))
        inner = np.abs(np.diff(field, axis=axis))
        assert wrapped.max() <= inner.max() + 1e-6
    assert field.std() > 0.1


def test_perlin_masks_respect_coverage_bounds():
    sampler = PerlinMaskSampler(threshold=0.3, coverage=(0.05, 0.2))
    rng = np.random.default_rng(0)
    coverages = [sampler(64, 80, rng).mean() for _ in range(50)]
    assert all(0.05 <= c <= 0.2 for c in coverages)
    assert len(set(coverages)) > 30  # varied, not one mask repeated


def test_impossible_coverage_fails_clearly():
    sampler = PerlinMaskSampler(coverage=(0.99, 1.0), max_tries=5)
    with pytest.raises(RuntimeError, match=r"coverage in \[0.99, 1.0\] after 5 tries"):
        sampler(32, 32, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("strategy", "kind", "image"),
    [
        ("texture", "texture", "texture_image"),
        ("object", "object", "object_image"),
        ("adaptive", "texture", "texture_image"),
        ("adaptive", "object", "object_image"),
    ],
)
def test_masks_are_honest(strategy, kind, image, request):
    image = request.getfixturevalue(image)
    generator = make_generator(strategy, kind, image_size=SIZE, seed=1, normal_probability=0.0)
    for _ in range(20):
        out, mask = generator(image)
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert mask.dtype == bool and mask.shape == image.shape[:2]
        assert mask.any()
        assert np.array_equal(out[~mask], image[~mask])  # outside: bit for bit
        assert np.all(np.any(out[mask] != image[mask], axis=1))  # inside: every pixel changed


def test_texture_coverage_stays_within_bounds(texture_image):
    generator = make_generator(
        "texture", "texture", image_size=SIZE, seed=2, normal_probability=0.0, coverage=(0.02, 0.3)
    )
    for _ in range(20):
        _, mask = generator(texture_image)
        assert mask.mean() <= 0.3  # the honest mask can only shrink the Perlin region


def test_none_strategy_and_normal_probability(texture_image):
    none = make_generator("none", "texture", image_size=SIZE, normal_probability=0.0)
    out, mask = none(texture_image)
    assert np.array_equal(out, texture_image) and not mask.any()
    generator = make_generator(
        "texture", "texture", image_size=SIZE, seed=0, normal_probability=0.5
    )
    anomalous = [generator(texture_image)[1].any() for _ in range(1000)]
    assert 0.45 <= np.mean(anomalous) <= 0.55


def test_same_seed_same_samples_and_different_seeds_differ(texture_image):
    def draw(seed):
        generator = make_generator("texture", "texture", image_size=SIZE, seed=seed)
        return [generator(texture_image) for _ in range(6)]

    first, again, other = draw(5), draw(5), draw(6)
    for (a, ma), (b, mb) in zip(first, again, strict=True):
        assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert any(not np.array_equal(a, b) for (a, _), (b, _) in zip(first, other, strict=True))


def test_per_sample_streams_do_not_depend_on_the_worker(texture_image):
    generator = make_generator("adaptive", "texture", image_size=SIZE, seed=9)
    copy = pickle.loads(pickle.dumps(generator))  # what a spawn-started worker receives
    a = generator(texture_image, rng=generator.sample_rng(3, 17))
    b = copy(texture_image, rng=copy.sample_rng(3, 17))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(generator(texture_image)[0], copy(texture_image)[0])  # state travels too


def test_a_sample_does_not_depend_on_what_was_drawn_before(texture_image):
    """Lazily built Perlin fields must not remember which sample asked first: a resumed run or
    another loader worker would otherwise draw other masks for the same (epoch, index)."""
    used = make_generator("texture", "texture", image_size=SIZE, seed=4, normal_probability=0.0)
    for index in range(40):
        used(texture_image, rng=used.sample_rng(0, index))
    fresh = make_generator("texture", "texture", image_size=SIZE, seed=4, normal_probability=0.0)
    for index in (3, 17, 29):
        a, b = (
            used(texture_image, rng=used.sample_rng(2, index)),
            fresh(texture_image, rng=fresh.sample_rng(2, index)),
        )
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_adaptive_puts_object_anomalies_on_the_object(object_image):
    foreground = foreground_mask(object_image)
    disc = np.zeros(object_image.shape[:2], np.uint8)
    cv2.circle(disc, (SIZE // 2, SIZE // 2), SIZE // 4, 1, -1)
    assert (foreground == disc.astype(bool)).mean() > 0.97
    generator = make_generator(
        "adaptive", "object", image_size=SIZE, seed=0, normal_probability=0.0
    )
    for _ in range(30):
        _, mask = generator(object_image)
        assert mask.any() and not (mask & ~foreground).any()
    # The plain object strategy lands off the object too.
    anywhere = make_generator("object", "object", image_size=SIZE, seed=0, normal_probability=0.0)
    assert any((anywhere(object_image)[1] & ~foreground).any() for _ in range(30))


def test_foreground_falls_back_to_the_whole_image_when_unsure():
    flat = np.full((SIZE, SIZE, 3), 128, np.uint8)
    assert foreground_mask(flat).all()


def _folder_of_images(folder, count, kind):
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(0, 255, (80, 90, 3), dtype=np.uint8)
        if kind == "object":  # a plain background with one clear blob
            image = np.full((80, 90, 3), 240, np.uint8)
            cv2.ellipse(image, (45, 40), (22, 16), i * 20, 0, 360, (30, 90, 200), -1)
        write_png(folder / f"{i}.png", image)
    return folder


def test_user_texture_and_object_folders(tmp_path, texture_image, object_image):
    _folder_of_images(tmp_path / "dtd" / "banded", 3, "texture")
    objects = _folder_of_images(tmp_path / "objects", 3, "object")
    generator = make_generator(
        "texture", "texture", texture_dir=tmp_path / "dtd", image_size=SIZE, normal_probability=0.0
    )
    out, mask = generator(texture_image)
    assert mask.any() and np.array_equal(out[~mask], texture_image[~mask])
    generator = make_generator(
        "object", "object", object_dir=objects, image_size=SIZE, normal_probability=0.0
    )
    out, mask = generator(object_image)
    # Pasted pixels come from the blue ellipses of the user's images.
    assert out[mask][:, 2].mean() > out[mask][:, 0].mean()


def test_user_folders_are_sampled_into_a_bounded_bank(tmp_path):
    folder = _folder_of_images(tmp_path / "textures", 5, "texture")
    assert [t.shape[:2] for t in load_textures(folder, 40, bank_size=8, seed=0)] == [(40, 45)] * 5
    bank = load_textures(folder, 40, bank_size=2, seed=0)
    assert len(bank) == 2
    assert all(
        np.array_equal(a, b) for a, b in zip(bank, load_textures(folder, 40, 2, 0), strict=True)
    )


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p / "missing", r"texture folder not found: .*missing"),
        (
            lambda p: (p / "file.png").write_bytes(b"x") and p / "file.png",
            r"texture folder is not a folder: .*file.png",
        ),
        (lambda p: (p / "empty").mkdir() or p / "empty", r"texture folder has no images .*empty"),
        (
            lambda p: (
                (p / "bad").mkdir() or (p / "bad" / "a.png").write_bytes(b"junk") and p / "bad"
            ),
            r"bad/a.png: not a readable image",
        ),
    ],
)
def test_bad_texture_folders_are_named(tmp_path, setup, message):
    folder = setup(tmp_path)
    with pytest.raises((OSError, ValueError), match=message):
        make_generator("texture", "texture", texture_dir=folder, image_size=SIZE)


def test_object_folder_without_objects_is_named(tmp_path):
    folder = tmp_path / "flat"
    for i in range(2):
        write_png(folder / f"{i}.png", np.full((60, 60, 3), 128, np.uint8))
    with pytest.raises(ValueError, match=r"object folder .*flat: no object could be cut out"):
        make_generator("object", "object", object_dir=folder, image_size=SIZE)


def test_unknown_strategy_kind_and_knobs_are_named():
    with pytest.raises(
        ValueError,
        match=r"unknown strategy 'perlin'; available: adaptive, defects, none, object, texture",
    ):
        make_generator("perlin", "texture")
    with pytest.raises(ValueError, match=r"unknown category kind 'fabric'"):
        make_generator("texture", "fabric")
    with pytest.raises(
        ValueError, match=r"unknown generator knob\(s\) beta; known: bank_size, blend"
    ):
        make_generator("texture", "texture", beta=0.5)
    with pytest.raises(ValueError, match=r"blend must satisfy 0.0 <= min <= max <= 1.0"):
        make_generator("texture", "texture", blend=(0.5, 1.5))
    with pytest.raises(ValueError, match=r"expected a uint8 \(H, W, 3\) RGB image, got float32"):
        make_generator("none", "texture")(np.zeros((8, 8, 3), np.float32))


def test_user_strategies_register_without_editing_the_package(texture_image):
    @register_strategy("test_stripes")
    def stripes(context):
        def apply(image, rng):
            region = np.zeros(image.shape[:2], bool)
            row = int(rng.integers(image.shape[0] - 4))
            region[row : row + 4] = True
            return paste(image, 255 - image, region)

        return apply

    assert "test_stripes" in available_strategies()
    generator = make_generator("test_stripes", "texture", image_size=SIZE, normal_probability=0.0)
    out, mask = generator(texture_image)
    assert mask.sum(axis=1).max() == SIZE and np.array_equal(out[~mask], texture_image[~mask])
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("test_stripes")(stripes)


def test_preview_command_writes_a_grid(tmp_path, capsys):
    image = tmp_path / "normal.png"
    write_png(image, default_image("object", 64))
    out = tmp_path / "grid.png"
    args = ["generator", "preview", "--strategy", "adaptive", "--category-kind", "object"]
    args += ["--image", str(image), "--image-size", "64", "--samples", "3", "--out", str(out)]
    assert main(args) == 0
    grid = read_rgb(out)
    assert grid.shape == (3 * 64 + 2 * 4, 3 * 64 + 2 * 4, 3)
    masks = grid[:64, -64:, 0]
    assert 0 < (masks == 255).sum() < masks.size
    assert main(["generator", "preview", "--strategy", "nope", "--out", str(out)]) == 2
    assert "unknown strategy 'nope'" in capsys.readouterr().err
