"""The ensemble model: one self-contained .keras whose logit is the mean of its members' calibrated logits."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from catdog.bundle import Bundle
from catdog.data import prepare, read_manifest
from catdog.gradcam import CamExplainer
from catdog.images import load_batch
from catdog.inference import predict_logits
from catdog.models import ensemble_model, logit_model
from catdog.training import TrainConfig, build_ensemble, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def members(tmp_path_factory, tiny_data):
    """Two tiny CNNs trained for one epoch at different input sizes (so the ensemble must resize)."""
    root = tmp_path_factory.mktemp("ensemble")
    prepare(tiny_data, root / "data", seed=0)
    manifest = root / "data" / "manifest.csv"
    paths = []
    for size, seed in ((48, 1), (64, 2)):
        config = TrainConfig(backbone="simple_cnn", image_size=size, head_epochs=1, batch_size=8, seed=seed,
                             openset_images=0)
        paths.append(train(manifest, root / f"m{size}", config).model_path)
    return manifest, paths


def test_ensemble_logit_is_the_mean_of_the_members_calibrated_logits(members):
    manifest, paths = members
    bundles = [Bundle.load(p) for p in paths]
    model = ensemble_model([b.model for b in bundles], [b.temperature for b in bundles])
    assert model.inputs[0].shape[1] == 64  # the largest member's size
    x = load_batch([i.path for i in read_manifest(manifest, "test")], 64).inputs.astype("float32")
    # each member sees the input resized to its own size, as inside the ensemble
    expected = np.mean([logit_model(b.model).predict(tf.image.resize(x, (b.image_size,) * 2), verbose=0)[:, 0]
                        / b.temperature for b in bundles], axis=0)
    np.testing.assert_allclose(logit_model(model).predict(x, verbose=0)[:, 0], expected, rtol=1e-5, atol=1e-6)
    layer_names = [layer.name for layer in model.layers]
    assert "m0_resize" in layer_names and "m1_last_conv" in layer_names  # one flat graph, members prefixed
    assert CamExplainer(model).layer_name in {"m0_last_conv", "m1_last_conv"}


def test_build_ensemble_saves_a_model_every_command_can_load(members, tmp_path):
    manifest, paths = members
    result = build_ensemble(paths, tmp_path / "ensemble.keras", openset_images=16)
    assert result.card.backbone == "ensemble" and result.card.members == [p.name for p in paths]
    assert result.card.metrics["test"]["n_images"] == len(read_manifest(manifest, "test"))
    loaded = Bundle.load(result.model_path)
    assert loaded.detector is not None  # fitted on the saved file's bytes
    batch = load_batch([i.path for i in read_manifest(manifest, "test")[:4]], loaded.image_size)
    before = keras.Model(result.model.input, result.model.get_layer("logit").output).predict(
        batch.inputs.astype("float32"), verbose=0).reshape(-1)
    np.testing.assert_allclose(loaded.predict(batch.inputs, reject=False)["logit"], before, atol=1e-5)
    with pytest.raises(FileExistsError):
        build_ensemble(paths, result.model_path)


def test_ensemble_needs_one_temperature_per_member(members):
    _, paths = members
    with pytest.raises(ValueError, match="one temperature per member"):
        ensemble_model([Bundle.load(paths[0]).model], [1.0, 2.0])


def test_train_recipe_with_members_trains_each_and_combines_them_resumably(tiny_data, tmp_path):
    from catdog.models import load_model
    from catdog.training import train_recipe
    prepare(tiny_data, tmp_path / "data", seed=0)
    manifest = tmp_path / "data" / "manifest.csv"
    base = TrainConfig(backbone="simple_cnn", image_size=48, head_epochs=1, batch_size=8, seed=3, openset_images=12)
    members = [{}, {"image_size": 64, "seed": 4}]
    result = train_recipe(manifest, tmp_path / "run", base, members)
    assert result.model_path == tmp_path / "run" / "model.keras" and result.card.backbone == "ensemble"
    assert result.card.members == ["member0_simple_cnn.keras", "member1_simple_cnn.keras"]
    assert [m.card.image_size for m in result.members] == [48, 64] and result.card.image_size == 64
    assert result.card.architecture == "ensemble of simple_cnn at 48 px + simple_cnn at 64 px"  # the demo's footer
    assert all(m.detector_path is None for m in result.members) and result.detector_path.is_file()
    assert list(result.histories()) == result.card.members and all(p.is_file() for p in result.histories().values())
    assert result.model_path.stat().st_size < 0.6 * sum(m.model_path.stat().st_size for m in result.members)
    items = read_manifest(manifest, "test")
    first = predict_logits(load_model(result.model_path), items)
    again = train_recipe(manifest, tmp_path / "run", base, members)  # finished members are reused, not retrained
    np.testing.assert_array_equal(predict_logits(load_model(again.model_path), items), first)
    with pytest.raises(ValueError, match="other settings"):
        train_recipe(manifest, tmp_path / "run", base, [{}, {"image_size": 56, "seed": 4}])
    with pytest.raises(ValueError, match="at least 2 members"):
        train_recipe(manifest, tmp_path / "other", base, [{}])


def test_ensemble_heatmaps_explain_every_member(members):
    """A member weighted ~0 (huge temperature) drops out of the ensemble's Grad-CAM: what is left is the other's
    own map (Grad-CAM is scale-free; Grad-CAM++'s closed form is not, so it is left out here)."""
    method = "gradcam"
    manifest, paths = members
    bundles = [Bundle.load(p) for p in paths]
    x = load_batch([i.path for i in read_manifest(manifest, "test")[:4]], 64).inputs.astype("float32")
    own = {48: tf.image.resize(x, (48, 48)).numpy(), 64: x}
    for kept in (0, 1):
        temperatures = [1e6, 1e6]
        temperatures[kept] = bundles[kept].temperature
        explainer = CamExplainer(ensemble_model([b.model for b in bundles], temperatures))
        assert explainer.layer_names == ["m0_last_conv", "m1_last_conv"]
        ours = explainer.explain(x, method=method)  # each its predicted class: the one with evidence
        member = bundles[kept]
        alone = CamExplainer(member.model).explain(own[member.image_size], method=method)
        alone = tf.image.resize(alone[..., None], (64, 64)).numpy()[..., 0]
        assert alone.max() > 0  # a map with structure to compare
        for a, b in zip(ours, alone):
            if b.max() == 0:  # no positive evidence in this member: none in the ensemble either
                assert a.max() == 0
            else:
                assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.97, kept


def test_the_reference_grad_cam_of_an_ensemble_is_the_explainers_map(members):
    """The benchmark's per-image ground truth explains every member too (not the first member's layer alone)."""
    from catdog.benchmarks import reference_gradcam
    manifest, paths = members
    bundles = [Bundle.load(p) for p in paths]
    model = ensemble_model([b.model for b in bundles], [b.temperature for b in bundles])
    x = load_batch([i.path for i in read_manifest(manifest, "test")[:4]], 64).inputs.astype("float32")
    explainer = CamExplainer(model)
    assert explainer.explain(x).max() > 0  # the predicted class has evidence: maps with structure to compare
    for target in ("predicted", "cat", "dog"):
        ours = explainer.explain(x, target=target)
        np.testing.assert_allclose(reference_gradcam(model, x, target=target), ours, atol=1e-4)
