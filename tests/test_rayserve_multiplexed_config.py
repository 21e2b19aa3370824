"""The multiplexed deployment's options, without Ray: the lazy models share one deployment (``stevedore-
multiplexed``) whose replicas can hold any of them, and the Serve config file lists it in their place. On a real
cluster: ``test_ray_jobs.py``."""

from __future__ import annotations

from pathlib import Path

from stevedore_server.base.settings import Settings
from stevedore_server.predictor import Predictor
from stevedore_server.rayserve.config import MULTIPLEXED, model_options, multiplexed_options, serve_config

from .documentation import block, page


class Small(Predictor):
    name = "small"
    predict_schema = {"type": "array"}
    predict_fixture = [1]


class Large(Small):
    name = "large"
    max_concurrency = 4


class Eager(Small):
    name = "eager"


SETTINGS = """
model_load = "lazy"
max_models_per_replica = 5

[models.small]
replicas = 2
ray_actor_options = {num_cpus = 0.25, resources = {ssd = 1}}

[models.large]
ray_actor_options = {num_cpus = 0.5, num_gpus = 1, memory = 1000, resources = {ssd = 0.5, gpu_node = 1}}

[models.eager]
load = "startup"
"""


def settings(tmp_path: Path) -> Settings:
    path = tmp_path / "settings.toml"
    path.write_text(SETTINGS)
    return Settings.load({}, config=str(path))


def test_the_lazy_models_deployment_can_load_any_of_them_and_holds_the_calls_of_its_share(tmp_path: Path) -> None:
    options = multiplexed_options(settings(tmp_path), [Small(), Large()])
    assert options["num_replicas"] == 2  # as many as the lazy model asking the most
    assert options["ray_actor_options"] == {
        "num_cpus": 0.5, "num_gpus": 1, "memory": 1000, "resources": {"ssd": 1, "gpu_node": 1},
    }  # fmt: skip
    capacities = [model_options(settings(tmp_path), model)["max_ongoing_requests"] for model in (Small(), Large())]
    assert options["max_ongoing_requests"] == 5 * max(capacities)  # the calls of five of the largest at once


def test_one_lazy_model_that_autoscales_makes_the_deployment_autoscale(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('model_load = "lazy"\n[models.small]\nmin_replicas = 1\nmax_replicas = 3\n')
    options = multiplexed_options(Settings.load({}, config=str(path)), [Small(), Large()])
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3}


def test_the_serve_config_lists_the_multiplexed_deployment_in_place_of_the_lazy_models(tmp_path: Path) -> None:
    config = serve_config(settings(tmp_path), [Small(), Large(), Eager()], "127.0.0.1", 8000)
    names = [deployment["name"] for deployment in config["applications"][0]["deployments"]]
    assert names == ["Ingress", "eager:1", MULTIPLEXED]


def test_without_lazy_models_there_is_no_multiplexed_deployment() -> None:
    config = serve_config(Settings(), [Small(), Eager()], "127.0.0.1", 8000)
    names = [deployment["name"] for deployment in config["applications"][0]["deployments"]]
    assert names == ["Ingress", "small:1", "eager:1"]


def test_the_ray_pages_settings_examples_load(tmp_path: Path) -> None:
    lazy = tmp_path / "lazy.toml"
    lazy.write_text(block("toml", "max_models_per_replica = 5", page("deployment/ray.md")))
    on_ray = Settings.load({}, config=str(lazy))
    assert on_ray.max_models_per_replica == 5 and on_ray.loads_lazily("customer-3")
    assert not on_ray.loads_lazily("customer-17")
    trainer = tmp_path / "trainer.toml"
    trainer.write_text(block("toml", "[models.iris-trainer]", page("deployment/ray.md")))
    actor_options = Settings.load({}, config=str(trainer)).for_model("iris-trainer").ray_actor_options
    assert actor_options == {"num_cpus": 1, "num_gpus": 1}  # its replicas', its jobs' actors'
