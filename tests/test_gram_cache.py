"""The Gram cache (tangentless.kernels.GramCache) and the compositional kernel as a scikit-learn
transformer (tangentless.solvers.CompositionalKernel): cached values equal the engine's, overlapping
requests compute only the pairs not seen, and a cross-validated grid search over a Pipeline slices
one matrix (>= 3x fewer kernel values than without the cache) with the same results."""
import copy

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

from tangentless.benchmarks.datasets import load_digits_images
from tangentless.kernels import GramCache, ZCAWhitening, myrtle
from tangentless.solvers import (CompositionalKernel, CompositionalKernelClassifier,
                                 KernelRidgeClassifier)

# 8x8 digits: the linear head pools 2, 2, then globally
SPEC = myrtle(5, head="linear")


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits_images()
    keep = np.concatenate([np.flatnonzero(labels == c)[:20] for c in range(3)])
    return images[keep], labels[keep], images[1000:1010]


def test_cached_values_equal_the_engine_and_only_new_pairs_are_computed(digits):
    x, _, z = digits
    cache = GramCache()
    full = cache.gram(SPEC, x[:30], progress=False)
    np.testing.assert_allclose(full, SPEC.gram(x[:30], progress=False), rtol=1e-6)
    assert cache.evaluations == 30 * 31 // 2
    # any sub-block, either orientation, is sliced: nothing computed
    np.testing.assert_allclose(cache.gram(SPEC, x[5:12], x[20:30], progress=False), full[5:12, 20:30])
    np.testing.assert_allclose(cache.gram(SPEC, x[20:30], x[5:12], progress=False), full[20:30, 5:12])
    np.testing.assert_allclose(cache.gram(SPEC, x[10:20], progress=False), full[10:20, 10:20])
    assert cache.evaluations == 30 * 31 // 2
    # 10 new images beside 10 cached ones: the symmetric block of the 20 rows that miss a pair
    grown = cache.gram(SPEC, x[20:40], progress=False)
    assert cache.evaluations == 30 * 31 // 2 + 20 * 21 // 2
    np.testing.assert_allclose(grown, SPEC.gram(x[20:40], progress=False), rtol=1e-6)
    # other images (one pixel changed) and another flip mode are other entries
    changed = z.copy()
    changed[0, 0, 0, 0] += 0.5
    np.testing.assert_allclose(cache.gram(SPEC, changed, x[:5], progress=False),
                               SPEC.gram(changed, x[:5], progress=False), rtol=1e-6)
    # the flip-symmetrized kernel: the plain half is cached already, the mirror half is new
    before = cache.evaluations
    flipped = cache.gram(SPEC, x[:5], flip=True, progress=False)
    np.testing.assert_allclose(flipped, SPEC.gram(x[:5], flip=True, progress=False), rtol=1e-6)
    assert cache.evaluations == before + 5 * 6 // 2
    np.testing.assert_allclose(cache.gram(SPEC, x[:5], flip="mirror", progress=False),
                               SPEC.gram(x[:5], flip="mirror", progress=False), rtol=1e-6)
    assert cache.evaluations == before + 5 * 6 // 2


def test_clones_share_the_cache_and_stores_are_refused(digits):
    cache = GramCache()
    kernel = CompositionalKernel(SPEC, zca=False, flip=False, cache=cache)
    assert clone(kernel).cache is cache and copy.deepcopy(cache) is cache
    with pytest.raises(ValueError, match="pass store= to spec.gram"):
        cache.gram(SPEC, digits[0][:3], store="k.zarr")
    with pytest.raises(ValueError, match="max_images must be >= 1"):
        GramCache(max_images=0)
    with pytest.raises(ValueError, match="cache must be a GramCache or None"):
        CompositionalKernel(SPEC, zca=False, cache={}).fit(digits[0][:5])


def test_the_transformer_is_the_kernel_of_the_whitened_images(digits):
    x, y, z = digits
    kernel = CompositionalKernel(SPEC, zca_bias=1e-2, flip=False)
    k_train = kernel.fit_transform(x)
    zca = ZCAWhitening(bias=1e-2).fit(x)
    np.testing.assert_allclose(k_train, SPEC.gram(zca.transform(x), progress=False), rtol=1e-6)
    np.testing.assert_allclose(kernel.transform(z),
                               SPEC.gram(zca.transform(z), zca.transform(x), progress=False), rtol=1e-6)
    # in a Pipeline before an estimator on precomputed kernels: the classifier on images
    pipe = make_pipeline(CompositionalKernel(SPEC, zca_bias=1e-2, flip=False),
                         KernelRidgeClassifier()).fit(x, y)
    direct = CompositionalKernelClassifier(SPEC, zca_bias=1e-2, flip=False).fit(x, y)
    np.testing.assert_array_equal(pipe.predict(z), direct.predict(z))
    svc = make_pipeline(CompositionalKernel(SPEC, zca_bias=1e-2, flip=False),
                        SVC(kernel="precomputed", C=100.0)).fit(x, y)
    on_kernels = SVC(kernel="precomputed", C=100.0).fit(k_train, y)
    np.testing.assert_array_equal(svc.predict(z), on_kernels.predict(kernel.transform(z)))


def _search(cache, x, y):
    pipe = make_pipeline(CompositionalKernel(SPEC, zca=False, flip=False, cache=cache),
                         KernelRidgeClassifier())
    return GridSearchCV(pipe, {"kernelridgeclassifier__alphas": [1e-3, 1.0]},
                        cv=StratifiedKFold(3, shuffle=True, random_state=0)).fit(x, y)


def test_a_grid_search_slices_one_matrix_with_the_same_results(digits, monkeypatch):
    x, y, z = digits
    whitened = ZCAWhitening(bias=1e-2).fit(x).transform(x)   # once, outside the search
    computed = []
    engine = type(SPEC).gram

    def counting_gram(spec, a, b=None, **options):
        computed.append(len(a) * (len(a) + 1) // 2 if b is None else len(a) * len(b))
        return engine(spec, a, b, **options)

    monkeypatch.setattr(type(SPEC), "gram", counting_gram)
    plain = _search(None, whitened, y)
    uncached = sum(computed)
    computed.clear()
    cache = GramCache()
    cached = _search(cache, whitened, y)
    assert sum(computed) == cache.evaluations
    # 2 candidates x 3 folds (fit + score) and the refit: 6 x (40.41/2 + 20.40) + 60.61/2 without
    # the cache; with it the first fold's two blocks and the symmetric block of its 20 test
    # images, which the second fold trains on: 40.41/2 + 20.40 + 20.21/2
    assert uncached == 6 * (40 * 41 // 2 + 20 * 40) + 60 * 61 // 2
    assert cache.evaluations == 40 * 41 // 2 + 20 * 40 + 20 * 21 // 2
    assert uncached >= 3 * cache.evaluations
    np.testing.assert_allclose(cached.cv_results_["mean_test_score"], plain.cv_results_["mean_test_score"])
    assert cached.best_params_ == plain.best_params_
    np.testing.assert_array_equal(cached.predict(whitened[:10]), plain.predict(whitened[:10]))
