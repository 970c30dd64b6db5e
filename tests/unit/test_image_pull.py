"""`image.source: pull`: the reference grammar, the inventory's refusals, the probe, the plan,
the record, the pull script and start's check of a pulled image (pure parts; the flow on
real dockerds is tests/e2e/test_image_pull.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dgxcluster.core import imageid, naming
from dgxcluster.errors import InventoryError
from dgxcluster.image import dockercmd, pullprobe
from dgxcluster.image.pullplan import Act, PullPlan, make_plan, settle
from dgxcluster.image.records import ImageRecord
from dgxcluster.image.startcheck import PulledImageCheck, _Answer, start_check
from dgxcluster.inventory import imageref, parse_inventory

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"
ID_A = "sha256:" + "a" * 64
ID_B = "sha256:" + "b" * 64


# -- image.ref as docker reads it (distribution/reference's normalize_test.go cases) ------

@pytest.mark.parametrize(("ref", "name", "tag", "pulled"), [
    ("ubuntu", "docker.io/library/ubuntu", None, "docker.io/library/ubuntu:latest"),
    ("docker.io/library/ubuntu:24.04", "docker.io/library/ubuntu", "24.04",
     "docker.io/library/ubuntu:24.04"),
    ("index.docker.io/foo/bar", "docker.io/foo/bar", None, "docker.io/foo/bar:latest"),
    ("nvcr.io/nvidia/vllm:26.10-py3", "nvcr.io/nvidia/vllm", "26.10-py3",
     "nvcr.io/nvidia/vllm:26.10-py3"),
    ("localhost:5000/k/img:1", "localhost:5000/k/img", "1", "localhost:5000/k/img:1"),
    ("localhost/img", "localhost/img", None, "localhost/img:latest"),
    ("ghcr.io/navi-ai-lab/nvllm:latest", "ghcr.io/navi-ai-lab/nvllm", "latest",
     "ghcr.io/navi-ai-lab/nvllm:latest"),
])
def test_references_normalise_as_docker_pull_does(ref: str, name: str, tag: str | None,
                                                  pulled: str) -> None:
    r = imageref.parse(ref)
    assert (r.name, r.tag, r.pulled) == (name, tag, pulled)


def test_spellings_docker_treats_alike_get_one_pull_tag() -> None:
    assert imageid.pull_tag("ubuntu") == imageid.pull_tag("docker.io/library/ubuntu:latest")
    assert imageid.pull_tag("ubuntu:24.04") != imageid.pull_tag("ubuntu:22.04")
    assert naming.is_pull_tag(imageid.pull_tag("ubuntu"))
    assert naming.is_content_tag(imageid.pull_tag("ubuntu"))


def test_digest_only_reference_cannot_be_a_tag_and_logs_in_to_its_registry() -> None:
    r = imageref.parse("nvcr.io/nvidia/vllm@sha256:" + "c" * 64)
    assert r.taggable is None and r.registry == "nvcr.io"
    assert imageref.parse("nvcr.io/nvidia/vllm:26.10-py3@sha256:" + "c" * 64).taggable == \
        "nvcr.io/nvidia/vllm:26.10-py3"
    assert imageref.parse("vllm/vllm-openai").registry is None  # Docker Hub: docker login's default


@pytest.mark.parametrize(("ref", "words"), [
    ("nvcr.io/NVIDIA/vllm:1", "must be lowercase"), ("Ubuntu", "must be lowercase"),
    ("a" * 64, "64-byte hexadecimal"),
    ("nvcr.io/nvidia/vllm:", "invalid reference format"),
    ("nvcr.io/nvidia/vllm@sha256:abc", "invalid reference format"),
    ("nvcr.io/nvidia/vllm@sha256:" + "c" * 65, "invalid checksum digest length"),
    ("-x/y", "invalid reference format"),
    ("img:tag with space", "invalid reference format"),
])
def test_references_docker_pull_refuses_are_refused(ref: str, words: str) -> None:
    with pytest.raises(imageref.ReferenceError, match=words):
        imageref.parse(ref)


# -- the inventory -----------------------------------------------------------------------

BASE = ("cluster: c\nnodes:\n  - {name: n1, host: 10.0.0.1, fabric_ip: 192.0.2.1}\n"
        "  - {name: n2, host: 10.0.0.2, fabric_ip: 192.0.2.2}\n")


@pytest.mark.parametrize(("image", "extra", "key", "words"), [
    ("{source: pull}", "", "image", "needs image.ref"),
    ("{source: pull, ref: nvcr.io/nvidia/vllm:26.10-py3, strategy: each}", "", "image",
     "strategy: distribute"),
    ("{source: pull, ref: 'nvcr.io/NVIDIA/vllm:1'}", "", "image.ref", "must be lowercase"),
    ("{source: fetch, ref: x}", "", "image.source", "'build' or 'pull'"),
    ("{source: pull, ref: x, login: {user: u, password_secret: NGC_API_KEY}}",
     "secrets: {env: [NGC_API_KEY]}\n", "image.login.password_secret", "leave it out"),
    ("{source: pull, ref: x, login: {user: '-p', password_secret: K}}", "", "image.login.user",
     "option"),
])
def test_bad_pull_settings_name_the_key(image: str, extra: str, key: str, words: str) -> None:
    with pytest.raises(InventoryError) as info:
        parse_inventory(BASE + f"image: {image}\n" + extra, "inv.yaml", environ={})
    assert f": {key}: " in str(info.value) or f": {key}." in str(info.value)
    assert words.lower() in str(info.value).lower()


def test_a_pulled_image_is_named_without_asking_a_node() -> None:
    inv = parse_inventory(BASE + "image: {source: pull, ref: 'nvcr.io/nvidia/vllm:26.10-py3'}\n",
                          environ={})
    img = imageid.expected(inv)
    assert img.pulled == "nvcr.io/nvidia/vllm:26.10-py3"
    assert img.content_tag == imageid.pull_tag("nvcr.io/nvidia/vllm:26.10-py3")
    assert img.ref == f"dgxcluster/vllm-gb10:{img.content_tag}"


# -- what a node holds (real answers from a testbed dockerd) -----------------------------

def test_probe_reads_a_real_answer_with_the_image_under_every_name() -> None:
    p = pullprobe.parse((REAL / "pullprobe_testbed_node1_held.txt").read_text())
    assert p.docker_error is None and p.home == "/root"
    assert p.ref.id is not None and p.ref.id == p.want.id == p.current.id
    assert p.up_to_date(p.ref.id, ref_taggable=True)
    assert p.record is not None and p.record.image_id == p.ref.id and p.record.how == "found"
    assert p.record.ray == "" and p.record.digest == p.ref.digests[0]


def test_probe_reads_a_real_answer_from_a_node_that_holds_nothing() -> None:
    p = pullprobe.parse((REAL / "pullprobe_testbed_node2_absent.txt").read_text())
    assert p.docker_error is None
    assert (p.ref.id, p.want.id, p.current.id) == (None, None, None)
    # the record is per image name: it names an image this node does not hold under these names
    assert p.record is not None and not p.holds(p.record.image_id)


def test_probe_reports_a_dead_dockerd_instead_of_an_absent_image() -> None:
    text = ("home\t/root\nimage\tref\t1\tCannot connect to the Docker daemon at "
            "unix:///var/run/docker.sock. Is the docker daemon running?\n")
    p = pullprobe.parse(text)
    assert p.docker_error is not None and "Cannot connect to the Docker daemon" in p.docker_error
    assert pullprobe.parse("home\t/root\n").docker_error == "no answer from docker image inspect"


# -- the plan ----------------------------------------------------------------------------

def _probe(ref: str | None = None, want: str | None = None, current: str | None = None
           ) -> pullprobe.PullProbe:
    return pullprobe.PullProbe("/root", None, pullprobe.Held(ref), pullprobe.Held(want),
                               pullprobe.Held(current))


def _plan(probes: dict[str, pullprobe.PullProbe | BaseException], refresh: bool = False,
          builder: str = "n1") -> PullPlan:
    return make_plan(ref="r:1", want="t/img:pull-x", moving="t/img:current", content_tag="pull-x",
                     taggable="docker.io/library/r:1", targets=list(probes), builder=builder,
                     probes=probes, refresh=refresh)


def test_nothing_held_the_build_node_pulls_and_the_others_receive() -> None:
    plan = _plan({"n1": _probe(), "n2": _probe()})
    assert (plan.source, plan.source_id) == ("n1", None)
    assert (plan.nodes["n1"].act, plan.nodes["n2"].act) == (Act.PULL, Act.RECEIVE)
    settle(plan, ID_A)  # after the pull: n2 holds nothing of it, so it still receives
    assert plan.nodes["n2"].act is Act.RECEIVE


def test_an_image_found_on_one_node_is_sent_from_there_without_a_pull() -> None:
    plan = _plan({"n1": _probe(), "n2": _probe(ref=ID_A)})
    assert plan.source == "n2" and plan.source_id == ID_A
    assert (plan.nodes["n2"].act, plan.nodes["n1"].act) == (Act.FOUND, Act.RECEIVE)
    assert plan.notes == ["n2 already holds r:1; sending it from there"]


def test_second_run_is_up_to_date_and_a_node_with_the_bytes_only_gets_tags() -> None:
    done = _probe(ID_A, ID_A, ID_A)
    plan = _plan({"n1": done, "n2": _probe(ref=ID_A)})
    assert (plan.nodes["n1"].act, plan.nodes["n2"].act) == (Act.UP_TO_DATE, Act.TAG)
    plan = _plan({"n1": done, "n2": done})
    assert {p.act for p in plan.nodes.values()} == {Act.UP_TO_DATE}


def test_no_cache_asks_the_registry_again_and_a_different_image_is_replaced() -> None:
    plan = _plan({"n1": _probe(ID_A, ID_A, ID_A), "n2": _probe(ID_B, ID_B, ID_B)}, refresh=True)
    assert plan.nodes["n1"].act is Act.PULL and plan.source_id is None
    settle(plan, ID_A)  # the tag had not moved: n2's older image is replaced by n1's
    assert plan.nodes["n2"].act is Act.RECEIVE


def test_unreachable_build_node_hands_the_pull_to_another() -> None:
    from dgxcluster.errors import ConnectError

    plan = _plan({"n1": ConnectError("n1", "timed out"), "n2": _probe()})
    assert plan.source == "n2" and plan.nodes["n1"].act is Act.UNREACHABLE
    assert plan.notes == ["build node n1 is not usable; using n2"]


# -- the record --------------------------------------------------------------------------

def test_record_keeps_what_was_pulled_and_reads_older_records() -> None:
    rec = ImageRecord("t/img", "pull-x", ID_A, "distribute", "pulled", "n1", "2026-12-02T00:00Z",
                      ref="nvcr.io/nvidia/vllm:26.10-py3", digest="nvcr.io/nvidia/vllm@sha256:1",
                      ray="")
    assert ImageRecord.from_json(rec.to_json()) == rec
    old = json.loads(rec.to_json())
    for k in ("ref", "digest", "ray"):
        del old[k]
    back = ImageRecord.from_json(json.dumps(old))
    assert back is not None and (back.ref, back.ray) == (None, None)
    assert ImageRecord.from_json("[1]") is None


# -- the pull script: the password travels on stdin only --------------------------------

def test_pull_argv_carries_the_reference_as_one_argument_and_never_a_password() -> None:
    argv = dockercmd.pull_argv("nvcr.io/nvidia/vllm:26.10-py3", "nvcr.io", "$oauthtoken")
    assert argv[:3] == ["sh", "-c", dockercmd.PULL]
    assert argv[4:] == ["nvcr.io/nvidia/vllm:26.10-py3", "nvcr.io", "$oauthtoken"]
    assert 'docker pull "$ref"' in dockercmd.PULL
    assert "--password-stdin" in dockercmd.PULL and "DOCKER_CONFIG" in dockercmd.PULL
    assert dockercmd.pull_argv("ubuntu", None, None)[4:] == ["ubuntu", "", ""]


# -- start's check -----------------------------------------------------------------------

def _check() -> PulledImageCheck:
    inv = parse_inventory(BASE + "image: {source: pull, ref: 'r:1', name: t/img}\n", environ={})
    check = start_check(inv)
    assert check is not None
    return check


def _rec(image_id: str, ray: str | None) -> ImageRecord:
    return ImageRecord("t/img", "pull-x", image_id, "distribute", "pulled", "n1", "t", ref="r:1",
                       ray=ray)


def test_start_accepts_one_image_with_ray_everywhere() -> None:
    verdict = _check().judge({"n1": _Answer(ID_A, _rec(ID_A, "2.57.1")),
                              "n2": _Answer(ID_A, _rec(ID_A, "2.57.1"))})
    assert verdict == {"n1": (True, ""), "n2": (True, "")}


def test_start_refuses_different_images_under_one_pull_tag() -> None:
    verdict = _check().judge({"n1": _Answer(ID_A, None), "n2": _Answer(ID_B, None)})
    assert not verdict["n1"][0] and "holds image aaaaaaaaaaaa" in verdict["n1"][1]
    assert "run: dgxcluster build" in verdict["n2"][1]


def test_start_refuses_an_image_without_ray_but_not_on_a_stale_record() -> None:
    verdict = _check().judge({"n1": _Answer(ID_A, _rec(ID_A, "")), "n2": _Answer(ID_A, None)})
    assert not verdict["n1"][0] and "has no Ray" in verdict["n1"][1]
    assert verdict["n2"] == (True, "")
    stale = _check().judge({"n1": _Answer(ID_A, _rec(ID_B, ""))})  # record of another image
    assert stale["n1"] == (True, "")


def test_the_native_executor_serves_a_pulled_image_without_ray() -> None:
    """NGC's vLLM image has no Ray: fine for `serve.executor: native`, which runs none."""
    inv = parse_inventory(BASE + "image: {source: pull, ref: 'r:1', name: t/img}\n"
                          "serve: {executor: native}\n", environ={})
    check = start_check(inv)
    assert check is not None
    verdict = check.judge({"n1": _Answer(ID_A, _rec(ID_A, "")), "n2": _Answer(ID_A, _rec(ID_A, ""))})
    assert verdict == {"n1": (True, ""), "n2": (True, "")}
    different = check.judge({"n1": _Answer(ID_A, None), "n2": _Answer(ID_B, None)})
    assert not different["n1"][0]  # the same image everywhere still matters


def test_a_built_image_gets_no_pull_check() -> None:
    assert start_check(parse_inventory(BASE, environ={})) is None


# -- docker pull's and ray --version's output (real captures) -----------------------------

def _body(name: str) -> str:
    first, _, rest = (REAL / name).read_text().partition("\n")
    assert first.startswith("# source:")
    return rest


def test_first_pull_counts_layers_and_reads_digest_and_status() -> None:
    from dgxcluster.facts import docker_pull

    said = docker_pull.parse(_body("docker_pull_first_testbed_registry2.8.2_docker20.10.txt"))
    assert said == docker_pull.Pulled(
        digest="sha256:ab23c0839dc7a6cae818a20de2c2e3597a8d83a0597c551baa1a557a8589a25a",
        updated=True, reference="localhost:5000/k/pulltest:1", layers=2, present=1)


def test_pull_of_an_unmoved_tag_says_up_to_date() -> None:
    from dgxcluster.facts import docker_pull

    said = docker_pull.parse(_body("docker_pull_up_to_date_testbed_registry2.8.2_docker20.10.txt"))
    assert (said.updated, said.layers, said.error) == (False, 0, None)


@pytest.mark.parametrize(("name", "words"), [
    ("docker_pull_manifest_unknown_testbed_registry2.8.2_docker20.10.txt", "manifest unknown"),
    ("docker_pull_connection_refused_testbed_docker20.10.txt", "connection refused"),
])
def test_failed_pulls_give_the_daemons_reason(name: str, words: str) -> None:
    from dgxcluster.facts import docker_pull

    said = docker_pull.parse(_body(name))
    assert said.updated is None and said.error is not None
    assert said.error.startswith("Error response from daemon:") and words in said.error


def test_progress_follows_layers_line_by_line() -> None:
    from dgxcluster.facts import docker_pull

    prog = docker_pull.PullProgress()
    moved = [prog.feed(ln) for ln in
             _body("docker_pull_first_testbed_registry2.8.2_docker20.10.txt").splitlines()]
    assert moved == [False, True, True, True, True, True, False, False, False]
    assert prog.describe() == "pulling: 2/2 layer(s)" and prog.present == 1


def test_ray_version_in_an_image_without_ray_is_missing_not_an_error() -> None:
    from dgxcluster.facts import ray_version

    text = _body("docker_run_ray_version_no_ray_testbed_docker20.10.txt")
    assert ray_version.parse(text, 127) == ray_version.RayVersion(missing=True)


def test_ray_version_reads_clicks_version_line() -> None:
    """Ray's CLI group carries click's default `@click.version_option()` (ray/scripts/scripts.py),
    whose message is `%(prog)s, version %(version)s`."""
    from dgxcluster.facts import ray_version

    assert ray_version.parse("ray, version 2.57.1\n", 0).version == "2.57.1"
    dead = ray_version.parse("Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
                             " Is the docker daemon running?\n", 1)
    assert dead.version is None and not dead.missing
    assert dead.error is not None and "Cannot connect to the Docker daemon" in dead.error


def test_pull_after_a_scoped_login_with_every_layer_held() -> None:
    """docker login's stored-unencrypted warning (into the throw-away DOCKER_CONFIG) and a pull
    that fetched no layer still read as a pull that worked."""
    from dgxcluster.facts import docker_pull

    said = docker_pull.parse(_body("docker_login_pull_layers_held_testbed_registry2.8.2_docker20.10.txt"))
    assert (said.updated, said.layers, said.error) == (True, 0, None)
    assert said.reference == "localhost:5002/k/pulltest:1"


def test_a_pulled_images_vllm_is_not_read_from_the_default_dockerfile() -> None:
    from dgxcluster.core.imagevllm import image_vllm

    pulled = BASE + "image: {source: pull, ref: 'vllm/vllm-openai:v0.9.0'}\n"
    got = image_vllm(parse_inventory(pulled, environ={}))
    assert got.version is None and "vllm/vllm-openai:v0.9.0" in got.where
    said = parse_inventory(BASE + "image: {source: pull, ref: 'vllm/vllm-openai:v0.9.0', "
                           "build_args: {VLLM_VERSION: 0.9.0}}\n", environ={})
    assert image_vllm(said).version == "0.9.0"


def test_entrypoints_that_run_their_command_and_one_that_does_not() -> None:
    from dgxcluster.facts import image_entrypoint as ep

    none, vllm, ours = (ep.parse(ln) for ln in
                        _body("docker_inspect_entrypoint_testbed_docker20.10.txt").splitlines())
    assert (none, vllm) == ([], ["vllm", "serve"])
    assert ours == ["/usr/bin/tini", "--", "/usr/local/bin/dgxcluster-entrypoint"]
    assert ep.passes_through([]) and ep.passes_through(ours)
    assert ep.passes_through(["/opt/nvidia/nvidia_entrypoint.sh"])
    assert not ep.passes_through(vllm) and not ep.passes_through(["/usr/bin/tini", "--", "vllm"])
    assert ep.parse("Error: No such image: x") is None


@pytest.mark.parametrize("kind", sorted(__import__("tests.hostile", fromlist=["HOSTILE"]).HOSTILE))
def test_hostile_image_refs_and_login_users_are_refused_naming_the_key(kind: str) -> None:
    """docker's reference grammar has no room for any of them (so none reaches a node); a
    login user is refused where it would be an option or break the line."""
    import yaml

    from tests.hostile import HOSTILE

    value = HOSTILE[kind]
    doc = yaml.safe_load(BASE)
    doc["image"] = {"source": "pull", "ref": value}
    with pytest.raises(InventoryError) as info:
        parse_inventory(yaml.safe_dump(doc), "inv.yaml", environ={})
    assert ": image.ref: " in str(info.value)
    doc["image"] = {"source": "pull", "ref": "r:1", "login": {"user": value, "password_secret": "K"}}
    try:
        inv = parse_inventory(yaml.safe_dump(doc), "inv.yaml", environ={})
    except InventoryError as exc:
        assert ": image.login.user: " in str(exc)
        return
    assert inv.image.login is not None
    argv = dockercmd.pull_argv("r:1", None, inv.image.login.user)
    assert argv[-1] == value  # one argv element, given to `docker login --username` by the script
