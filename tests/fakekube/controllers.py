"""Controllers: Deployment -> ReplicaSet -> Pods, garbage collection, namespaces, quotas, services.

- Deployments own one ReplicaSet per pod-template hash (``<deploy>-<hash>``); a template
  change makes a new one and scales the old ones to 0 at once (Recreate-like). ReplicaSets
  make pods named ``<rs>-<5 chars>`` with the template's labels plus ``pod-template-hash``
  and a controller ownerReference; surplus pods go unscheduled first, then not-ready, then
  newest. A refused create (quota, missing service account) sets ``ReplicaFailure`` with the
  API's message on the ReplicaSet and the Deployment, and a FailedCreate event.
  Pods that ended (Succeeded/Failed) still count, so a crashing command is not re-run.
- Garbage collection: an object whose owners are all gone is deleted (background
  propagation), so deleting a Deployment deletes its ReplicaSets and pods.
- Namespaces: a new one gets the ``default`` ServiceAccount and the ``kube-root-ca.crt``
  ConfigMap; a deleted one (phase Terminating) has everything in it deleted, its pods'
  processes stopped, and is removed once empty.
- ResourceQuota ``status.hard``/``status.used``; LoadBalancer Service status:
  ``ingress: [{ip: 127.0.0.1, ports: [{port: <host port>, protocol}]}]`` once a started
  pod backs it (the host port is where the target pod's process really listens).
"""

from __future__ import annotations

import hashlib
import json

from tests.fakekube import kinds as K
from tests.fakekube.errors import ApiError
from tests.fakekube.events import condition, record, set_condition
from tests.fakekube.kubelet import Kubelet
from tests.fakekube.quota import quota_status
from tests.fakekube.store import Store

_HASH_CHARS = "bcdfghjklmnpqrstvwxz2456789"
ROOT_CA = "-----BEGIN CERTIFICATE-----\nZmFrZWt1YmUgcm9vdCBDQQ==\n-----END CERTIFICATE-----\n"


def template_hash(template: dict) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_HASH_CHARS[b % len(_HASH_CHARS)] for b in digest[:10])


def _owned_by(obj: dict, uid: str) -> bool:
    return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])


def _ready(pod: dict) -> bool:
    c = condition(pod, "Ready")
    return bool(c and c.get("status") == "True")


def _drop_zeros(status: dict) -> dict:
    return {k: v for k, v in status.items() if v not in (0, None, [])}


class Controllers:
    def __init__(self, store: Store, kubelet: Kubelet, load_balancer_ip: str = "127.0.0.1"):
        self.store = store
        self.kubelet = kubelet
        # the address LoadBalancer Services get; tests set an unroutable one (192.0.2.1, TEST-NET-1)
        # to play a load balancer the desktop has no network route to
        self.load_balancer_ip = load_balancer_ip
        self.load_balancer_ips: dict[str, str] = {}  # per namespace, over load_balancer_ip

    def after_create(self, kind: K.Kind, obj: dict) -> None:
        """Synchronous follow-ups of a create (the real controllers race the client; this does not)."""
        if kind.key == "namespaces":
            self._namespace_defaults(obj["metadata"]["name"])

    def run_once(self) -> None:
        self.namespaces()
        self.garbage_collect()
        self.deployments()
        self.replicasets()
        self.quotas()

    def services(self) -> None:
        for svc in list(self.store.iter(K.SERVICES)):
            spec = svc.get("spec") or {}
            if spec.get("type") != "LoadBalancer":
                continue
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            ports = [self.kubelet.service_port(ns, name, p.get("port")) for p in spec.get("ports") or []]
            if ports and all(p is not None for p in ports):
                ingress = [{"ip": self.load_balancer_ips.get(ns, self.load_balancer_ip), "ipMode": "VIP",
                            "ports": [{"port": hp, "protocol": p.get("protocol", "TCP")}
                                      for hp, p in zip(ports, spec["ports"])]}]
                status = {"loadBalancer": {"ingress": ingress}}
            else:
                status = {"loadBalancer": {}}
            if svc.get("status") != status:
                fresh = self.store.find(K.SERVICES, ns, name)
                fresh["status"] = status
                self.store.write(K.SERVICES, fresh)

    # ---- namespaces ------------------------------------------------------------------
    def _namespace_defaults(self, ns: str) -> None:
        for kind, name, body in ((K.SERVICEACCOUNTS, "default", {}),
                                 (K.CONFIGMAPS, "kube-root-ca.crt", {"data": {"ca.crt": ROOT_CA}})):
            if self.store.find(kind, ns, name) is None:
                try:
                    self.store.create(kind, ns, {"metadata": {"name": name}, **body})
                except ApiError:
                    pass

    def namespaces(self) -> None:
        for ns_obj in list(self.store.iter(K.NAMESPACES)):
            ns = ns_obj["metadata"]["name"]
            if not ns_obj["metadata"].get("deletionTimestamp"):
                continue
            remaining = 0
            for kind in K.KINDS:
                if not kind.namespaced:
                    continue
                for obj in list(self.store.iter(kind, ns)):
                    remaining += 1
                    if not obj["metadata"].get("deletionTimestamp"):
                        self.store.delete(kind, ns, obj["metadata"]["name"], grace=None)
                    elif obj["metadata"].get("finalizers") and kind.key not in ("pods",):
                        self.store.remove(kind, ns, obj["metadata"]["name"])
            if remaining == 0:
                self.store.remove(K.NAMESPACES, None, ns)

    # ---- garbage collection ----------------------------------------------------------
    def garbage_collect(self) -> None:
        nodes = {n["metadata"]["name"] for n in self.store.iter(K.NODES)}
        for pod in list(self.store.iter(K.PODS)):   # pods bound to a Node that is gone
            node = (pod.get("spec") or {}).get("nodeName")
            if node and node not in nodes and not pod["metadata"].get("deletionTimestamp"):
                self.store.delete(K.PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        uids = {o["metadata"]["uid"] for kind in K.KINDS for o in self.store.iter(kind)}
        for kind in K.KINDS:
            for obj in list(self.store.iter(kind)):
                refs = obj["metadata"].get("ownerReferences") or []
                if refs and not obj["metadata"].get("deletionTimestamp") \
                        and not any(r.get("uid") in uids for r in refs):
                    self.store.delete(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])

    # ---- deployments -------------------------------------------------------------------
    def deployments(self) -> None:
        for d in list(self.store.iter(K.DEPLOYMENTS)):
            if d["metadata"].get("deletionTimestamp"):
                continue
            ns, name, uid = d["metadata"]["namespace"], d["metadata"]["name"], d["metadata"]["uid"]
            spec = d["spec"]
            h = template_hash(spec["template"])
            rs_name = f"{name}-{h}"
            owned = [rs for rs in self.store.iter(K.REPLICASETS, ns) if _owned_by(rs, uid)]
            if not any(rs["metadata"]["name"] == rs_name for rs in owned):
                template = json.loads(json.dumps(spec["template"]))
                template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
                selector = json.loads(json.dumps(spec["selector"]))
                selector.setdefault("matchLabels", {})["pod-template-hash"] = h
                try:
                    self.store.create(K.REPLICASETS, ns, {
                        "metadata": {"name": rs_name, "labels": template["metadata"]["labels"],
                                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                                          "uid": uid, "controller": True,
                                                          "blockOwnerDeletion": True}]},
                        "spec": {"replicas": spec.get("replicas", 1), "selector": selector, "template": template}})
                except ApiError as err:
                    record(self.store, d, "FailedCreate", err.message, type_="Warning",
                           component="deployment-controller")
                    continue
                owned = [rs for rs in self.store.iter(K.REPLICASETS, ns) if _owned_by(rs, uid)]
            for rs in owned:
                want = spec.get("replicas", 1) if rs["metadata"]["name"] == rs_name else 0
                if rs["spec"].get("replicas") != want:
                    fresh = self.store.find(K.REPLICASETS, ns, rs["metadata"]["name"])
                    fresh["spec"]["replicas"] = want
                    self.store.write(K.REPLICASETS, fresh)
            self._deployment_status(d, owned, rs_name)

    def _deployment_status(self, d: dict, owned: list[dict], rs_name: str) -> None:
        pods = [p for rs in owned for p in self.store.iter(K.PODS, d["metadata"]["namespace"])
                if _owned_by(p, rs["metadata"]["uid"]) and not p["metadata"].get("deletionTimestamp")]
        new_rs = next((rs for rs in owned if rs["metadata"]["name"] == rs_name), None)
        new_uid = new_rs["metadata"]["uid"] if new_rs else None
        desired = d["spec"].get("replicas", 1)
        ready = sum(1 for p in pods if _ready(p))
        updated = sum(1 for p in pods if _owned_by(p, new_uid))
        fresh = self.store.find(K.DEPLOYMENTS, d["metadata"]["namespace"], d["metadata"]["name"])
        old_status = fresh.get("status") or {}
        status = _drop_zeros({"observedGeneration": d["metadata"].get("generation", 1), "replicas": len(pods),
                              "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": ready,
                              "unavailableReplicas": max(desired - ready, 0)})
        status["conditions"] = json.loads(json.dumps(old_status.get("conditions") or []))
        fresh["status"] = status
        now = self.store.clock.rfc3339()
        if ready >= desired:
            set_condition(fresh, now, "Available", "True", "MinimumReplicasAvailable",
                          "Deployment has minimum availability.")
        else:
            set_condition(fresh, now, "Available", "False", "MinimumReplicasUnavailable",
                          "Deployment does not have minimum availability.")
        done = updated == desired and ready >= desired and len(pods) == desired
        set_condition(fresh, now, "Progressing", "True", "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
                      f'ReplicaSet "{rs_name}" {"has successfully progressed" if done else "is progressing"}.')
        failure = condition(new_rs, "ReplicaFailure") if new_rs else None
        if failure and failure.get("status") == "True":
            set_condition(fresh, now, "ReplicaFailure", "True", failure.get("reason"), failure.get("message"))
        else:
            fresh["status"]["conditions"] = [c for c in fresh["status"]["conditions"] if c["type"] != "ReplicaFailure"]
        for c in fresh["status"]["conditions"]:
            c["lastUpdateTime"] = c.get("lastTransitionTime", now)
        self.store.write(K.DEPLOYMENTS, fresh)

    # ---- replicasets -------------------------------------------------------------------
    def replicasets(self) -> None:
        for rs in list(self.store.iter(K.REPLICASETS)):
            if rs["metadata"].get("deletionTimestamp"):
                continue
            ns, uid = rs["metadata"]["namespace"], rs["metadata"]["uid"]
            pods = [p for p in self.store.iter(K.PODS, ns)
                    if _owned_by(p, uid) and not p["metadata"].get("deletionTimestamp")]
            want = rs["spec"].get("replicas", 1)
            failure = None
            if len(pods) < want:
                failure = self._create_pods(rs, want - len(pods))
            elif len(pods) > want:
                def rank(p: dict) -> tuple:
                    return (bool(p["spec"].get("nodeName")), (p.get("status") or {}).get("phase") == "Running",
                            _ready(p), [-ord(ch) for ch in p["metadata"]["creationTimestamp"]])
                for pod in sorted(pods, key=rank)[:len(pods) - want]:
                    self.store.delete(K.PODS, ns, pod["metadata"]["name"])
            pods = [p for p in self.store.iter(K.PODS, ns)
                    if _owned_by(p, uid) and not p["metadata"].get("deletionTimestamp")]
            fresh = self.store.find(K.REPLICASETS, ns, rs["metadata"]["name"])
            ready = sum(1 for p in pods if _ready(p))
            conditions = json.loads(json.dumps((fresh.get("status") or {}).get("conditions") or []))
            fresh["status"] = {"replicas": len(pods), **_drop_zeros({
                "fullyLabeledReplicas": len(pods), "readyReplicas": ready, "availableReplicas": ready}),
                "observedGeneration": fresh["metadata"].get("generation", 1)}
            if failure:
                fresh["status"]["conditions"] = conditions
                set_condition(fresh, self.store.clock.rfc3339(), "ReplicaFailure", "True", "FailedCreate", failure)
            elif len(pods) >= want:
                conditions = [c for c in conditions if c["type"] != "ReplicaFailure"]
                if conditions:
                    fresh["status"]["conditions"] = conditions
            elif conditions:
                fresh["status"]["conditions"] = conditions
            self.store.write(K.REPLICASETS, fresh)

    def _create_pods(self, rs: dict, count: int) -> str | None:
        template = rs["spec"]["template"]
        meta = template.get("metadata") or {}
        for _ in range(count):
            body = {"metadata": {"generateName": f"{rs['metadata']['name']}-",
                                 "labels": dict(meta.get("labels") or {}),
                                 "annotations": dict(meta.get("annotations") or {}),
                                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                      "name": rs["metadata"]["name"], "uid": rs["metadata"]["uid"],
                                                      "controller": True, "blockOwnerDeletion": True}]},
                    "spec": json.loads(json.dumps(template.get("spec") or {}))}
            if not body["metadata"]["annotations"]:
                del body["metadata"]["annotations"]
            try:
                self.store.create(K.PODS, rs["metadata"]["namespace"], body)
            except ApiError as err:
                current = condition(rs, "ReplicaFailure")
                if not current or current.get("message") != err.message:
                    record(self.store, rs, "FailedCreate", f"Error creating: {err.message}", type_="Warning",
                           component="replicaset-controller")
                return err.message
        return None

    # ---- quotas ------------------------------------------------------------------------
    def quotas(self) -> None:
        for q in list(self.store.iter(K.QUOTAS)):
            status = quota_status(self.store, q)
            if q.get("status") != status:
                fresh = self.store.find(K.QUOTAS, q["metadata"]["namespace"], q["metadata"]["name"])
                fresh["status"] = status
                self.store.write(K.QUOTAS, fresh)
