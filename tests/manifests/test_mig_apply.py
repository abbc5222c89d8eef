"""Applying MIG layouts is opt-in: the component manifests/components/mig-apply adds exactly the grants
`kgm serve --mig-planner apply` uses (node labels; the MIG manager's ConfigMap in the GPU Operator's
namespace) and sets the mode on the controller; the plain install grants neither and recommends."""

from __future__ import annotations

from inventory.layouts.settings import LayoutSettings, PlannerMode
from tests.manifests.rendering import INSTALL, MIG_APPLY, container, env_of, find, key, of_kind, render
from tests.manifests.test_rbac import CONTROLLER_GRANTS, grants

DEFAULTS = LayoutSettings()
NS, CM = DEFAULTS.configmap_namespace, DEFAULTS.configmap_name
MIG_APPLY_GRANTS = {
    ("", "", "nodes", "patch", "*"),
    (NS, "", "configmaps", "get", CM),
    (NS, "", "configmaps", "patch", CM),
    (NS, "", "configmaps", "create", "*"),
}
COMPONENT_OBJECTS = {
    ("ClusterRole", "", "kgm-mig-apply"),
    ("ClusterRoleBinding", "", "kgm-mig-apply"),
    ("Role", NS, "kgm-mig-apply"),
    ("RoleBinding", NS, "kgm-mig-apply"),
}


def test_the_component_grants_the_controller_exactly_what_applying_uses() -> None:
    assert grants(render(MIG_APPLY), "kgm") == CONTROLLER_GRANTS | MIG_APPLY_GRANTS


def test_the_plain_install_cannot_change_layouts_and_only_recommends() -> None:
    objs = render(INSTALL)
    assert not grants(objs, "kgm") & MIG_APPLY_GRANTS
    env = env_of(container(find(objs, "Deployment", "kgm"), "kgm"))
    assert "KGM_MIG_PLANNER" not in env and DEFAULTS.mode is PlannerMode.RECOMMEND


def test_the_component_sets_apply_and_names_the_configmap_its_role_grants() -> None:
    env = env_of(container(find(render(MIG_APPLY), "Deployment", "kgm"), "kgm"))
    assert env["KGM_MIG_PLANNER"]["value"] == PlannerMode.APPLY.value
    assert (env["KGM_MIG_CONFIG_NAMESPACE"]["value"], env["KGM_MIG_CONFIG_NAME"]["value"]) == (NS, CM)


def test_the_overlay_is_the_install_with_the_component_and_nothing_else_changed() -> None:
    install = {key(o): o for o in render(INSTALL)}
    overlay = {key(o): o for o in render(MIG_APPLY)}
    assert set(overlay) == set(install) | COMPONENT_OBJECTS
    for k, obj in install.items():
        if k == ("Deployment", "kgm-system", "kgm"):
            c = container(overlay[k], "kgm")
            c["env"] = [e for e in c["env"] if not e["name"].startswith("KGM_MIG_")]
        assert overlay[k] == obj, k


def test_no_grant_of_the_component_is_a_wildcard() -> None:
    for role in of_kind(render(MIG_APPLY), "Role") + of_kind(render(MIG_APPLY), "ClusterRole"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
