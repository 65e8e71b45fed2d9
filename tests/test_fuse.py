"""nn.fuse: eval-mode BatchNorm folded into the convolution before it, through the public API."""
import numpy as np
import pytest

from fastconv import nn
from fastconv.nn import models

DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=1e-11, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)


def _randomize_batchnorms(model, seed=0):
    """Running statistics and affine parameters away from their 0/1 starts."""
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            dtype = m.running_mean.dtype if m.track_running_stats else np.float32
            if m.track_running_stats:
                m.running_mean[...] = rng.standard_normal(c) * 0.5
                m.running_var[...] = rng.random(c) + 0.3
            if m.affine:
                m.weight.data[...] = (rng.random(c) + 0.5).astype(dtype)
                m.bias.data[...] = rng.standard_normal(c).astype(dtype)
    return model


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_pairs_fold_and_outputs_match(dtype):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 6, 3, stride=2, groups=2), nn.BatchNorm2d(6, affine=False),
                          nn.Flatten())
    model = _randomize_batchnorms(model.to(dtype))
    model.eval()
    x = np.random.default_rng(1).standard_normal((4, 3, 9, 9)).astype(dtype)
    want = model(x)
    fused = nn.fuse(model)
    assert _count(fused, nn.BatchNorm2d) == 0 and _count(model, nn.BatchNorm2d) == 2
    assert fused[0].bias is not None and fused[0].weight.data.dtype == dtype
    got = fused(x)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, **_tol(dtype))
    np.testing.assert_array_equal(model(x), want)  # the original is untouched


def test_resnet20_folds_every_batchnorm_and_matches():
    model = _randomize_batchnorms(models.resnet20())
    model.eval()
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    want = model(x)
    fused = nn.fuse(model)
    # stem, two per block (9 blocks), two projections
    assert _count(model, nn.BatchNorm2d) == 21 and _count(fused, nn.BatchNorm2d) == 0
    np.testing.assert_allclose(fused(x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_pairs_inside_residual_and_concat():
    def branch(c_in, c_out):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out))

    model = nn.Sequential(nn.Residual(branch(4, 4), shortcut=branch(4, 4)),
                          nn.Concat(branch(4, 2), branch(4, 3)), nn.ReLU())
    model = _randomize_batchnorms(model, seed=3).eval()
    x = np.random.default_rng(4).standard_normal((3, 4, 6, 6)).astype(np.float32)
    fused = nn.fuse(model)
    assert _count(fused, nn.BatchNorm2d) == 0
    np.testing.assert_allclose(fused(x), model(x), **_tol(np.float32))


def test_what_cannot_fold_is_left_alone():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(), nn.BatchNorm2d(3),       # not after a conv
                          nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, track_running_stats=False))
    model = _randomize_batchnorms(model, seed=5).eval()
    x = np.random.default_rng(6).standard_normal((5, 2, 4, 4)).astype(np.float32)
    fused = nn.fuse(model)
    assert _count(fused, nn.BatchNorm2d) == 2
    np.testing.assert_allclose(fused(x), model(x), **_tol(np.float32))


def test_train_mode_is_refused_and_inplace_fuses_the_model_itself():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="eval mode"):
        nn.fuse(model)
    model.eval()
    model[1].train()
    with pytest.raises(ValueError, match="1"):
        nn.fuse(model)
    model.eval()
    assert nn.fuse(model, inplace=True) is model
    assert isinstance(model[1], nn.Identity)
