"""The daemon API's OpenAPI description, served at ``/v1/openapi.json``."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(schema: dict[str, Any], status: str = "200", media: str = "application/json") -> dict[str, Any]:
    return {
        status: {"description": "success", "content": {media: {"schema": schema}}},
        "default": {"description": "an error", "content": {"application/json": {"schema": _ref("Error")}}},
    }


NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "cluster name or id"}]

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "reccd", "version": "1",
             "description": "The RECC per-user daemon, served over a Unix socket owned by its user."},
    "paths": {
        "/v1/health": {"get": {"summary": "daemon identity and liveness", "responses": _ok({"type": "object"})}},
        "/v1/openapi.json": {"get": {"summary": "this document", "responses": _ok({"type": "object"})}},
        "/v1/clusters": {
            "get": {"summary": "list clusters",
                    "description": (
                        "Rows are `Cluster`s without what moves on every second, so that the listing (and its "
                        "ETag) changes only when a cluster does: no `age_seconds` (from `created_at` and "
                        "`deleted_at`) and no `accrued_cost`, but `accrual`: `{cost, at, per_hour}`, the dollars "
                        "accrued up to `at` (the last node-count change; null if it never had nodes) and the "
                        "dollars per hour since, so the cost at `now` is `cost + per_hour * (now - at) / 3600`. "
                        "A harvest's `seconds_left` is as of the last heartbeat; `deadline` is exact. Heartbeat "
                        "facts and tunnel byte counts reach the listing at most 5 s late; status, workers, nodes "
                        "and tunnel state at once."),
                    "parameters": [{"name": "all", "in": "query", "schema": {"type": "boolean"},
                                    "description": "include deleted and failed clusters"},
                                   {"name": "If-None-Match", "in": "header", "schema": {"type": "string"},
                                    "description": "the ETag of the listing the client has: 304 if unchanged"}],
                    "responses": {**_ok({"type": "object", "properties": {
                        "clusters": {"type": "array", "items": _ref("Cluster")}}}),
                        "304": {"description": "the listing is the one the If-None-Match tag names"}}},
            "post": {"summary": "create a cluster (returns at once; follow /v1/events or poll)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["spec"],
                         "properties": {"spec": _ref("ClusterSpec"), "name": {"type": "string"},
                                        "confirm_cost": {"type": "boolean"}}}}}},
                     "responses": _ok(_ref("Cluster"), "202")},
        },
        "/v1/clusters/{name}": {
            "get": {"summary": "one cluster with its events", "parameters": NAME, "responses": _ok(_ref("Cluster"))},
            "delete": {"summary": "delete a cluster and everything made for it", "parameters": NAME,
                       "requestBody": {"required": False, "content": {"application/json": {"schema": {
                           "type": "object", "properties": {
                               "reason": {"type": "string", "maxLength": 500},
                               "by": {"type": "string", "enum": ["user", "harvest", "recc harvest"]}}}}}},
                       "responses": _ok(_ref("Cluster"))},
        },
        "/v1/clusters/{name}/scale": {"post": {
            "summary": "scale to n_workers", "parameters": NAME,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["n_workers"],
                "properties": {"n_workers": {"type": "integer", "minimum": 0}}}}}},
            "responses": _ok(_ref("Cluster"))}},
        "/v1/clusters/{name}/extend": {"post": {
            "summary": "postpone the idle harvest by `minutes` (default 30)", "parameters": NAME,
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"minutes": {"type": "number", "minimum": 0, "exclusiveMinimum": True}}}}}},
            "responses": _ok(_ref("Cluster"))}},
        "/v1/costs": {"get": {
            "summary": "accrued dollars grouped by cluster, user, job or day",
            "description": (
                "Without `exact`: `{by, costs: [{<by>, cost}]}` from the node counts the daemon saw. With "
                "`exact=1`: EKS spend from the instances' launch and termination times in AWS "
                "(DescribeInstances, DescribeScalingActivities) x the catalog price, over the last `days`, "
                "as `{by, days, exact: true, message, contexts: [{context, region, costs: [{<by>, cost}], "
                "error, hint}]}`; `message` says why there are no contexts (none configured), and a context "
                "AWS refuses (no login, no rights) has its own `error` and `hint`. The answer is reused for "
                "30 s."),
            "parameters": [{"name": "by", "in": "query",
                            "schema": {"type": "string", "enum": ["cluster", "user", "job", "day"]}},
                           {"name": "exact", "in": "query", "schema": {"type": "boolean"}},
                           {"name": "days", "in": "query",
                            "schema": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 366}}],
            "responses": _ok({"type": "object"})}},
        "/v1/clusters/{name}/connection": {"get": {
            "summary": "tunnel address, dashboard link and client TLS material (owner only)", "parameters": NAME,
            "responses": _ok({"type": "object"})}},
        "/v1/clusters/{name}/logs": {"get": {
            "summary": "log lines per component", "parameters": NAME + [
                {"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "since_seconds", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                {"name": "timestamps", "in": "query", "schema": {"type": "boolean"}}],
            "responses": _ok({"type": "object"})}},
        "/v1/events": {"get": {
            "summary": "event stream, one JSON object per line",
            "parameters": [{"name": "cluster", "in": "query", "schema": {"type": "string"}}],
            "responses": _ok({"type": "object"}, media="application/x-ndjson")}},
        "/v1/shutdown": {"post": {"summary": "delete the daemon's clusters and stop",
                                  "responses": _ok({"type": "object"}, "202")}},
        "/v1/credentials": {"get": {
            "summary": "AWS identity, session expiry and state (no secrets); check=0: do not call AWS",
            "parameters": [{"name": "check", "in": "query", "schema": {"type": "string"}}],
            "responses": _ok({"type": "object"})}},
        "/v1/credentials/reload": {"post": {"summary": "re-read the login and forget every short-lived session",
                                            "responses": _ok({"type": "object"})}},
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "hint": {"type": "string", "nullable": True}}}}},
        "ClusterSpec": {"type": "object", "description": "fields of recc.spec.ClusterSpec; all optional",
                        "additionalProperties": True},
        "Cluster": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "provider": {"type": "string"},
            "template": {"type": "string"}, "status": {"type": "string"},
            "workers": {"type": "object"}, "cost_per_hour": {"type": "number", "nullable": True},
            "endpoints": {"type": "object"}, "tunnel": {"type": "object"},
            "age_seconds": {"type": "number", "description": "one cluster's GET only (see the listing)"},
            "accrued_cost": {"type": "number", "description": "one cluster's GET only (see the listing)"},
            "accrual": {"type": "object", "description": "the listing only: {cost, at, per_hour}"}}},
    }},
}
