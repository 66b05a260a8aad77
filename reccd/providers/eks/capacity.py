"""Capacity for one cluster: an Auto Scaling group per cluster and instance type, launched from a
RECC-named copy of the context's launch template, tagged (and the tags propagated to instances) so
that cost, the reaper and the orphan sweep find it. Sizes are always computed from the spec, never
incremented; groups are found by tag, so a delete from any checkpoint removes all of them."""

from __future__ import annotations

import asyncio
from typing import Any

from recc import manifests as M
from recc.errors import ProviderError
from reccd.providers.eks.apis import EksApis

CA_PREFIX = "k8s.io/cluster-autoscaler/node-template/"
MANAGED = "recc:managed"


def group_name(user: str, instance_type: str, cluster: str) -> str:
    """``recc-<user>-<type>-<cluster>``, e.g. ``recc-arathe-c5-xlarge-c1``."""
    user_part = M.namespace_name(user, cluster)[len("recc-"):-len(cluster) - 1]
    return f"recc-{user_part}-{instance_type.replace('.', '-')}-{cluster}"


async def ensure_group(apis: EksApis, names: M.Names, instance_type: str, nodes: int) -> dict[str, Any]:
    """The cluster's Auto Scaling group for ``instance_type``, sized to ``nodes`` (capped by the context)."""
    ctx = apis.context
    group = group_name(names.user, instance_type, names.cluster)
    desired = min(nodes, ctx.max_nodes)
    if ctx.max_nodes_total is not None:
        desired = min(desired, ctx.max_nodes_total)
    tags = tags_for(names, getattr(apis, "daemon_id", None))
    template = await _ensure_launch_template(apis, group, instance_type, tags)
    asg_tags = dict(tags)
    asg_tags[f"kubernetes.io/cluster/{ctx.eks_cluster}"] = "owned"
    asg_tags[f"{CA_PREFIX}label/{M.CAPACITY_KEY}"] = names.namespace
    asg_tags[f"{CA_PREFIX}taint/{M.CAPACITY_KEY}"] = f"{names.namespace}:NoSchedule"
    asg_tags[f"k8s.io/cluster-autoscaler/{ctx.eks_cluster}"] = "owned"
    where: dict[str, Any] = ({"VPCZoneIdentifier": ",".join(ctx.subnets)} if ctx.subnets
                             else {"AvailabilityZones": list(ctx.availability_zones or [f"{ctx.region}a"])})
    # Look first: a create over an existing name must never replace a group (moto does; AWS says AlreadyExists).
    existing = await apis.aws("autoscaling", "describe_auto_scaling_groups", AutoScalingGroupNames=[group])
    made = None if existing["AutoScalingGroups"] else await apis.aws(
        "autoscaling", "create_auto_scaling_group", ok=("AlreadyExists",),
        AutoScalingGroupName=group, LaunchTemplate={"LaunchTemplateName": template, "Version": "$Latest"},
        MinSize=0, MaxSize=ctx.max_nodes, DesiredCapacity=desired, **where,
        Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True, "ResourceId": group,
               "ResourceType": "auto-scaling-group"} for k, v in asg_tags.items()])
    if made is None:  # it existed (a retry): converge the size, never increment
        await apis.aws("autoscaling", "update_auto_scaling_group", AutoScalingGroupName=group, MinSize=0,
                      MaxSize=ctx.max_nodes, DesiredCapacity=desired)
    apis.side_effect_done()
    return {"name": group, "launch_template": template, "instance_type": instance_type,
            "desired": desired, "max": ctx.max_nodes, "wanted": nodes}


def tags_for(names: M.Names, daemon_id: str | None = None) -> dict[str, str]:
    """The cost and ownership tags of every AWS resource of a cluster (propagated to instances);
    with ``daemon_id``, the daemon that made it (its restart sweep touches only its own)."""
    tags = {MANAGED: "true", "recc:user": names.user, "recc:namespace": names.namespace,
            "recc:job": names.job, "recc:cluster": names.cluster}
    if daemon_id:
        tags[M.DAEMON_TAG] = daemon_id
    return tags


async def _ensure_launch_template(apis: EksApis, group: str, instance_type: str, tags: dict[str, str]) -> str:
    """A RECC-named copy of the context's launch template (or AMI + profile) with this instance type."""
    ctx = apis.context
    if ctx.has_launch_template:
        ref = ({"LaunchTemplateId": ctx.launch_template_id} if ctx.launch_template_id
               else {"LaunchTemplateName": ctx.launch_template_name})
        versions = await apis.aws("ec2", "describe_launch_template_versions", Versions=["$Default"], **ref)
        data = dict(versions["LaunchTemplateVersions"][0]["LaunchTemplateData"])
    elif ctx.ami_id:
        data = {"ImageId": ctx.ami_id}
        if ctx.instance_profile_arn:
            data["IamInstanceProfile"] = {"Arn": ctx.instance_profile_arn}
    else:
        raise ProviderError(f"context {ctx.name!r} has neither a launch template nor an AMI for nodes",
                            hint="set launch_template_id (or ami_id and instance_profile_arn); see docs/eks.md")
    data["InstanceType"] = instance_type
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    data["TagSpecifications"] = [{"ResourceType": "instance", "Tags": tag_list}]
    await apis.aws("ec2", "create_launch_template", ok=("InvalidLaunchTemplateName.AlreadyExistsException",),
                  LaunchTemplateName=group, LaunchTemplateData=data,
                  TagSpecifications=[{"ResourceType": "launch-template", "Tags": tag_list}])
    apis.side_effect_done()
    return group


async def own_groups(apis: EksApis, namespace: str | None = None) -> list[dict[str, Any]]:
    """This user's RECC groups (of one namespace when given), found by tag."""
    def list_() -> list[dict[str, Any]]:
        out, token = [], None
        while True:
            kwargs: dict[str, Any] = {"Filters": [{"Name": "tag:recc:user", "Values": [apis.user]}]}
            if token:
                kwargs["NextToken"] = token
            page = apis.aws_sync("autoscaling", "describe_auto_scaling_groups", **kwargs)
            for g in page["AutoScalingGroups"]:
                tags = {t["Key"]: t["Value"] for t in g.get("Tags", [])}
                if tags.get(MANAGED) == "true" and tags.get("recc:user") == apis.user and (
                        namespace is None or tags.get("recc:namespace") == namespace):
                    out.append(g)
            token = page.get("NextToken")
            if not token:
                return out

    return await asyncio.to_thread(list_)



async def delete_capacity(apis: EksApis, namespace: str, known_groups: set[str]) -> None:
    """Delete the namespace's groups (by tag, plus ``known_groups``) and its RECC launch templates."""
    groups = {g["AutoScalingGroupName"] for g in await own_groups(apis, namespace)} | known_groups
    for group in sorted(groups):
        await apis.aws("autoscaling", "delete_auto_scaling_group", AutoScalingGroupName=group, ForceDelete=True,
                       ok=("ValidationError",))
    # also the templates of a group never made
    templates = await apis.aws("ec2", "describe_launch_templates",
                               Filters=[{"Name": "tag:recc:namespace", "Values": [namespace]},
                                        {"Name": f"tag:{MANAGED}", "Values": ["true"]}])
    for template in templates.get("LaunchTemplates", []):
        await apis.aws("ec2", "delete_launch_template", LaunchTemplateId=template["LaunchTemplateId"],
                       ok=("InvalidLaunchTemplateName.NotFoundException", "InvalidLaunchTemplateId.NotFound"))


def no_instances(apis: EksApis, ns: str) -> bool:
    resp = apis.aws_sync("ec2", "describe_instances",
                          Filters=[{"Name": "tag:recc:namespace", "Values": [ns]},
                                   {"Name": "instance-state-name", "Values": ["pending", "running", "stopping"]}])
    return not any(r["Instances"] for r in resp["Reservations"])

