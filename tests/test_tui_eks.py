"""`recc-tui`'s costs screen shows EKS spend from AWS's own instance times, through a daemon wired to moto.

The timeline is scripted as in tests/test_eks_ops.py: a RECC-tagged group of two instances made behind
the daemon's back, one terminated after a few seconds, one still running. An expensive instance type
(p3.16xlarge, $24.48/h) makes seconds show in cents, so the figure on screen is checked to the cent
against instance-seconds x price.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from textual.widgets import DataTable, Static

from recc import manifests as M
from recctui.app import RECCApp
from recctui.screens.costs import CostsScreen
from tests.eks_env import USER, EksWorld, eks_daemon, eks_world, write_contexts
from tests.test_tui import SIZE, wait_for

pytestmark = pytest.mark.slow

ITYPE, PRICE = "p3.16xlarge", 24.48  # us-east-1, the shipped catalog
CLUSTER = "billed"


@pytest.fixture(scope="module", autouse=True)
def world():
    with eks_world() as w:
        yield w


def make_group(world: EksWorld, desired: int) -> str:
    """A group (and its launch template) tagged as the provider tags them, made behind the daemon's back."""
    name = f"recc-{USER}-{ITYPE.replace('.', '-')}-{CLUSTER}"
    tags = {"recc:managed": "true", "recc:user": USER, "recc:namespace": M.namespace_name(USER, CLUSTER),
            "recc:job": "adhoc", "recc:cluster": CLUSTER}
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    world.boto("ec2").create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
        "ImageId": "ami-12c6146b", "InstanceType": ITYPE,
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list}]})
    world.boto("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"}, MinSize=0,
        MaxSize=3, DesiredCapacity=desired, AvailabilityZones=["us-east-1a"],
        Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True, "ResourceId": name,
               "ResourceType": "auto-scaling-group"} for k, v in tags.items()])
    return name


def exact_row(app: RECCApp) -> tuple[str, str, str] | None:
    screen = next(iter(app.screens_of(CostsScreen)), None)
    if screen is None:
        return None
    table = screen.query_one("#exact", DataTable)
    rows = [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]
    return next((r for r in rows if r[0] == CLUSTER), None)  # type: ignore[return-value]


async def test_costs_screen_shows_exact_eks_cost_from_instance_times(world, recc_dirs) -> None:
    d = eks_daemon(world, recc_dirs)
    asg, ec2 = world.boto("autoscaling"), world.boto("ec2")
    group = make_group(world, desired=2)
    try:
        ids = [i["InstanceId"] for i in asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
               ["AutoScalingGroups"][0]["Instances"]]  # moto launches them on this describe
        assert len(ids) == 2
        time.sleep(3)
        ec2.terminate_instances(InstanceIds=[ids[0]])
        ended_at = time.time()
        launched = {i["InstanceId"]: i["LaunchTime"].timestamp() for r in ec2.describe_instances(
            InstanceIds=ids)["Reservations"] for i in r["Instances"]}

        app = RECCApp()
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.daemon_up, "the daemon link")
            asked_at = time.time()
            await pilot.press("c")
            row = await wait_for(pilot, lambda: exact_row(app), "the exact cost of the EKS cluster", timeout=90)
            shown_at = time.time()
            status = str(app.screen.query_one("#exact-status", Static).render())

        # one instance from launch to termination, one still running when the daemon asked AWS
        def cost(now: float) -> float:
            return ((ended_at - launched[ids[0]]) + (now - launched[ids[1]])) * PRICE / 3600

        _, context, figure = row
        amount = float(figure.lstrip("$").replace(",", ""))
        slack = 2 * 2 * PRICE / 3600 + 0.005  # AWS's times are whole seconds; half a cent of rounding
        assert context == "adhoc"
        assert cost(asked_at) - slack <= amount <= cost(shown_at) + slack, (amount, cost(asked_at), cost(shown_at))
        assert amount >= 0.05  # seconds of a p3.16xlarge: a figure a wrong formula would not hit by chance
        assert f"last 31 days: {figure}" in status

        # no EKS contexts: the daemon's answer says why there is nothing, as the TUI shows it
        write_contexts(recc_dirs, {})
        answer = await asyncio.to_thread(d.client().exact_costs, "cluster", 7)
        assert answer["contexts"] == [] and "no contexts are configured" in answer["message"]
    finally:
        asg.delete_auto_scaling_group(AutoScalingGroupName=group, ForceDelete=True)
        ec2.delete_launch_template(LaunchTemplateName=group)
        d.cleanup()
