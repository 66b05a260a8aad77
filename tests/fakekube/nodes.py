"""Nodes from moto: the running instances of RECC's Auto Scaling groups become Nodes.

Every ``interval`` seconds (or when poked) the fake lists the Auto Scaling groups that carry
the tag key ``recc:managed`` and the running EC2 instances, both through boto3 against
``moto_endpoint`` in a worker thread. Each running instance of such a group is a Node:

- name: the instance's private DNS name (its id when moto gives none);
- labels: the usual ``kubernetes.io/hostname``, ``node.kubernetes.io/instance-type``,
  ``topology.kubernetes.io/region|zone``, ``kubernetes.io/os|arch``, plus one per group tag
  ``k8s.io/cluster-autoscaler/node-template/label/<k>`` = ``<v>``;
- taints: one per group tag ``k8s.io/cluster-autoscaler/node-template/taint/<k>`` =
  ``<v>:<Effect>``;
- capacity: the type's vCPUs, kubelet memory (``recc.plan.kubelet_memory_mib``), max pods and
  GPUs; allocatable: ``recc.plan.allocatable(type, daemonsets=False)``, i.e. what the kubelet
  reports. The scheduler additionally counts the aws-node and kube-proxy daemonset pods
  (``recc.plan.DAEMONSET_*``) against each such node, as on EKS, without materialising them;
- condition Ready=True at once (there is no boot delay).

A group tagged ``kubernetes.io/cluster/<other cluster>`` is ignored (its nodes join another
cluster). When an instance is gone (terminated, or no longer in a group) its Node is removed
and the pods bound to it are deleted (their processes stopped); a Deployment then makes new,
Pending pods.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from recc.catalog import InstanceType, load_catalog
from recc.plan import allocatable, kubelet_memory_mib, max_pods

from tests.fakekube import kinds as K
from tests.fakekube.errors import ApiError
from tests.fakekube.store import Store

log = logging.getLogger("fakekube.nodes")
MANAGED_TAG = "recc:managed"
LABEL_TAG = "k8s.io/cluster-autoscaler/node-template/label/"
TAINT_TAG = "k8s.io/cluster-autoscaler/node-template/taint/"
CLUSTER_TAG = "kubernetes.io/cluster/"
INSTANCE_ANNOTATION = "fakekube.recc.dev/instance-id"
GROUP_ANNOTATION = "fakekube.recc.dev/auto-scaling-group"
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class NodeSync:
    def __init__(self, store: Store, *, moto_endpoint: str, cluster_name: str, region: str = "us-east-1",
                 interval: float = 1.0):
        self.store = store
        self.endpoint = moto_endpoint
        self.cluster_name = cluster_name
        self.region = region
        self.interval = interval
        self.poke = asyncio.Event()
        self.polls = 0
        self._clients: tuple[Any, Any] | None = None
        self._types: dict[str, InstanceType] = {}

    async def run(self) -> None:
        while True:
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # moto briefly unavailable, etc.: try again next round
                log.warning("node sync from moto failed: %r", exc)
            try:
                await asyncio.wait_for(self.poke.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
            self.poke.clear()

    async def sync_once(self) -> None:
        found = await asyncio.to_thread(self._describe)
        self.polls += 1
        self._apply(found)

    # ---- AWS side (in a thread) -----------------------------------------------------
    def _boto(self) -> tuple[Any, Any]:
        if self._clients is None:
            import boto3
            kw = dict(endpoint_url=self.endpoint, region_name=self.region,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
            self._clients = (boto3.client("autoscaling", **kw), boto3.client("ec2", **kw))
        return self._clients

    def _describe(self) -> list[dict]:
        asg, ec2 = self._boto()
        members: dict[str, tuple[str, dict[str, str]]] = {}
        for page in asg.get_paginator("describe_auto_scaling_groups").paginate(
                Filters=[{"Name": "tag-key", "Values": [MANAGED_TAG]}]):
            for group in page["AutoScalingGroups"]:
                tags = {t["Key"]: t.get("Value", "") for t in group.get("Tags", [])}
                if MANAGED_TAG not in tags:
                    continue
                owners = [k[len(CLUSTER_TAG):] for k in tags if k.startswith(CLUSTER_TAG)]
                if owners and self.cluster_name not in owners:
                    continue
                for inst in group.get("Instances", []):
                    members[inst["InstanceId"]] = (group["AutoScalingGroupName"], tags)
        if not members:
            return []
        out = []
        for page in ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-state-name", "Values": ["running"]}]):
            for res in page["Reservations"]:
                for inst in res["Instances"]:
                    if inst["InstanceId"] not in members:
                        continue
                    group, tags = members[inst["InstanceId"]]
                    out.append({"id": inst["InstanceId"], "type": inst["InstanceType"],
                                "dns": inst.get("PrivateDnsName") or "", "ip": inst.get("PrivateIpAddress") or "",
                                "az": (inst.get("Placement") or {}).get("AvailabilityZone", f"{self.region}a"),
                                "group": group, "tags": tags, "itype": self._instance_type(inst["InstanceType"])})
        return out

    def _instance_type(self, name: str) -> InstanceType:
        catalog = load_catalog()
        if name in catalog:
            return catalog.instance(name)
        if name not in self._types:
            _, ec2 = self._boto()
            info = ec2.describe_instance_types(InstanceTypes=[name])["InstanceTypes"][0]
            gpus = sum(g.get("Count", 0) for g in (info.get("GpuInfo") or {}).get("Gpus", []))
            self._types[name] = InstanceType(
                name=name, vcpu=info["VCpuInfo"]["DefaultVCpus"], memory_mib=info["MemoryInfo"]["SizeInMiB"],
                gpus=gpus, enis=info["NetworkInfo"]["MaximumNetworkInterfaces"],
                ipv4_per_eni=info["NetworkInfo"]["Ipv4AddressesPerInterface"])
        return self._types[name]

    # ---- Kubernetes side (on the loop) ----------------------------------------------
    def _apply(self, found: list[dict]) -> None:
        by_id = {f["id"]: f for f in found}
        existing = {}
        for node in list(self.store.iter(K.NODES)):
            iid = (node["metadata"].get("annotations") or {}).get(INSTANCE_ANNOTATION)
            if iid:
                existing[iid] = node["metadata"]["name"]
        for iid, name in existing.items():
            if iid not in by_id:
                log.info("instance %s is gone: removing node %s", iid, name)
                self.store.remove(K.NODES, None, name)
                for pod in list(self.store.iter(K.PODS)):
                    if (pod.get("spec") or {}).get("nodeName") == name:
                        self.store.delete(K.PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        for iid, inst in by_id.items():
            if iid not in existing:
                try:
                    self.store.create(K.NODES, None, node_for(inst, self.cluster_name, self.store.clock.rfc3339()))
                except ApiError as err:
                    log.warning("cannot make a node of %s: %s", iid, err.message)


def _arch(itype: str) -> str:
    family = itype.split(".", 1)[0]
    return "arm64" if "g" in family[2:] or family == "a1" else "amd64"  # Graviton: m6g, c7gn, r6gd


def node_for(inst: dict, cluster_name: str, now: str) -> dict:
    itype: InstanceType = inst["itype"]
    name = inst["dns"] or inst["id"]
    region = inst["az"][:-1]
    labels = {
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": _arch(itype.name),
        "node.kubernetes.io/instance-type": itype.name, "topology.kubernetes.io/region": region,
        "topology.kubernetes.io/zone": inst["az"],
    }
    taints = []
    for key, value in sorted(inst["tags"].items()):
        if key.startswith(LABEL_TAG):
            labels[key[len(LABEL_TAG):]] = value
        elif key.startswith(TAINT_TAG):
            tvalue, _, effect = value.rpartition(":")
            if effect not in EFFECTS:
                tvalue, effect = value, "NoSchedule"
            taint = {"key": key[len(TAINT_TAG):], "effect": effect}
            if tvalue:
                taint["value"] = tvalue
            taints.append(taint)
    alloc = allocatable(itype, daemonsets=False)
    capacity = {"cpu": str(itype.vcpu), "memory": f"{kubelet_memory_mib(itype.memory_mib)}Mi",
                "pods": str(max_pods(itype)), "ephemeral-storage": "20959212Ki"}
    allocatable_ = {"cpu": f"{alloc.cpu_millis}m", "memory": f"{alloc.memory_mib}Mi", "pods": str(alloc.pods),
                    "ephemeral-storage": "18242267924"}
    if itype.gpus:
        capacity["nvidia.com/gpu"] = allocatable_["nvidia.com/gpu"] = str(itype.gpus)
    conditions = [{"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": m,
                   "lastHeartbeatTime": now, "lastTransitionTime": now}
                  for t, r, m in (("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
                                  ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                                  ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"))]
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                       "lastTransitionTime": now})
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {INSTANCE_ANNOTATION: inst["id"], GROUP_ANNOTATION: inst["group"],
                                     "fakekube.recc.dev/cluster": cluster_name}},
        "spec": {"providerID": f"aws:///{inst['az']}/{inst['id']}", **({"taints": taints} if taints else {})},
        "status": {
            "capacity": capacity, "allocatable": allocatable_, "conditions": conditions,
            "addresses": [a for a in ({"type": "InternalIP", "address": inst["ip"]},
                                      {"type": "Hostname", "address": name},
                                      {"type": "InternalDNS", "address": inst["dns"]}) if a["address"]],
            "nodeInfo": {"architecture": _arch(itype.name), "bootID": inst["id"], "containerRuntimeVersion":
                         "containerd://1.7.27", "kernelVersion": "6.1.0-fakekube", "kubeProxyVersion": "v1.33.0",
                         "kubeletVersion": "v1.33.0-eks-fakekube", "machineID": inst["id"], "operatingSystem":
                         "linux", "osImage": "Amazon Linux 2023 (fakekube)", "systemUUID": inst["id"]},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        },
    }
