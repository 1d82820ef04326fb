"""scikit-learn's estimator checks on the image estimators. Most checks feed 2-D (n_samples,
n_features) tables, which are not (N, H, W, C) images: those are declared expected failures here
(scikit-learn's mechanism), each with its reason; every other check must pass (bad input named in
scikit-learn's words where it has them: sparse, complex, empty data, no y, one class, continuous
y; the parameter, clone, repr and tag contracts)."""
from sklearn.utils.estimator_checks import parametrize_with_checks

from tangentless.benchmarks.cnn import CNNClassifier
from tangentless.kernels import ZCAWhitening
from tangentless.scattering import ScatteringFeatures, ScatteringRidgeClassifier, SparseScatteringClassifier
from tangentless.solvers import CompositionalKernel, CompositionalKernelClassifier

TABLE = ("it fits on a 2-D (n_samples, n_features) table; the estimator takes (N, H, W, C) images "
         "and refuses other ranks")

#: the checks that fit or predict on 2-D tables, for every images-in estimator
ON_TABLES = ("check_dict_unchanged", "check_dont_overwrite_parameters", "check_estimators_dtypes",
             "check_estimators_fit_returns_self", "check_estimators_overwrite_params",
             "check_estimators_pickle", "check_f_contiguous_array_estimator", "check_fit2d_predict1d",
             "check_fit_check_is_fitted", "check_fit_idempotent", "check_fit_score_takes_y",
             "check_methods_sample_order_invariance", "check_methods_subset_invariance",
             "check_n_features_in", "check_n_features_in_after_fitting", "check_pipeline_consistency",
             "check_readonly_memmap_input", "check_positive_only_tag_during_fit",
             "check_estimators_nan_inf", "check_fit2d_1feature", "check_dtype_object")
CLASSIFIER_ON_TABLES = ("check_classifier_data_not_an_array", "check_classifiers_classes",
                        "check_classifiers_train", "check_supervised_y_2d")
TRANSFORMER_ON_TABLES = ("check_transformer_data_not_an_array", "check_transformer_general",
                         "check_transformer_preserve_dtypes", "check_fit2d_1sample")

ZCA = {
    "check_estimators_dtypes":
        "its integer tables hold rows that are constant, which per-image normalization cannot "
        "scale to unit norm: ZCAWhitening refuses them by design, naming the rows",
}

ESTIMATORS = [
    CompositionalKernelClassifier(), CompositionalKernel(), ScatteringRidgeClassifier(),
    SparseScatteringClassifier(), CNNClassifier("myrtle5"), ScatteringFeatures(), ZCAWhitening(),
]


def expected_failures(estimator) -> dict[str, str]:
    if isinstance(estimator, ZCAWhitening):    # takes (N, D) rows as well as images
        return ZCA
    names = ON_TABLES + (TRANSFORMER_ON_TABLES if hasattr(estimator, "transform")
                         else CLASSIFIER_ON_TABLES)
    if hasattr(estimator, "predict_proba"):
        names += ("check_decision_proba_consistency",)
    return dict.fromkeys(names, TABLE)


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failures)
def test_scikit_learn_checks(estimator, check):
    check(estimator)
