"""DVC stages `evaluate@baseline` and `evaluate@part`: a trained model on the prepared test set
under every attack of params.eval -> metrics/<variant>.json."""

from typing import Any

from part.evaluate import evaluate_with_params, write_metrics
from part.params import Params
from part.pipeline import TEST_SET, check_variant, metrics_path, model_path
from part.stage import variant_stage_app


def run_evaluate(params: Params, variant: str) -> dict[str, Any]:
    check_variant(variant)
    metrics = evaluate_with_params(params, model_path(variant), TEST_SET)
    write_metrics(metrics_path(variant), metrics)
    return metrics


app = variant_stage_app(run_evaluate, __doc__)

if __name__ == "__main__":
    app()
