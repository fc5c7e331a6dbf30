"""An MCP client nobody at Paygrid wrote (the official Python SDK, `mcp` >= 2.3) against
Paygrid: over streamable HTTP (a URL) or stdio (`paygrid mcp`, spawned).

Lists the tools, submits a card payment, reads it as a resource and follows it to
success, then makes a call with a bad argument and checks the tool error names the field,
and approves a payment the risk check sent to review with the `approve_task` tool.
Prints one JSON line with what it saw; exits non-zero on any failed check.

    python mcp_check.py http://127.0.0.1:PORT/mcp
    python mcp_check.py stdio /path/to/paygrid http://127.0.0.1:50051

With TLS and tokens on (as Paygrid runs by default), PAYGRID_CERTS_DIR names the
directory holding the CA (ca.crt) to trust and PAYGRID_TOKEN the bearer token to send.
"""

import asyncio
import json
import os
import ssl
import sys
import time

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

CERTS = os.environ.get("PAYGRID_CERTS_DIR")
TOKEN = os.environ.get("PAYGRID_TOKEN")


def check(condition, message):
    if not condition:
        raise SystemExit(f"check failed: {message}")


def text_of(result):
    return "".join(getattr(block, "text", "") for block in result.content)


async def run(server, label):
    seen = {}
    async with Client(server) as client:
        seen["protocol"] = client.protocol_version
        tools = (await client.list_tools()).tools
        names = {tool.name: tool for tool in tools}
        for wanted in ["submit_workflow", "get_workflow", "list_workflows", "cancel_workflow",
                       "approve_task", "validate_spec", "list_agents", "health", "risk.score", "gateway.capture",
                       "pause_workflow", "resume_workflow", "retry_workflow", "redrive_workflow", "bulk_operation"]:
            check(wanted in names, f"tool {wanted} listed (got {sorted(names)})")
        capture = names["gateway.capture"]
        check(capture.annotations is not None and capture.annotations.destructive_hint is True,
              "gateway.capture is annotated destructive")
        check("idempotency_key" in capture.input_schema.get("required", []),
              "gateway.capture requires an idempotency key")
        check(names["risk.score"].annotations.read_only_hint is True, "risk.score is read-only")
        seen["tools"] = len(tools)

        submitted = await client.call_tool("submit_workflow", {
            "spec_ref": "card-payment@3",
            "input": {"amount_minor": 1250, "currency": "EUR", "card_token": "tok_visa"},
            "idempotency_key": f"mcp-{label}",
        })
        check(not submitted.is_error, f"submit_workflow succeeded: {text_of(submitted)}")
        workflow_id = submitted.structured_content["workflow_id"]
        uri = f"paygrid://workflows/{workflow_id}"

        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            read = await client.read_resource(uri)
            body = json.loads(read.contents[0].text)
            status = body["status"]
            if status not in ("pending", "running", "compensating"):
                break
            await asyncio.sleep(0.2)
        check(status == "succeeded", f"the payment succeeded (status {status})")
        seen["workflow_id"] = workflow_id
        seen["tasks"] = [t["task_id"] for t in body["tasks"]]
        templates = (await client.list_resource_templates()).resource_templates
        check(any(t.uri_template == "paygrid://workflows/{id}" for t in templates),
              "the workflow resource template is listed")
        check(any(t.uri_template.startswith("paygrid://specs/") for t in templates),
              "the spec resource template is listed")
        listed = [str(r.uri) for r in (await client.list_resources()).resources]
        check("paygrid://specs/card-payment@3" in listed, f"the submitted spec is a resource: {listed[:5]}")
        spec_text = (await client.read_resource("paygrid://specs/card-payment@3")).contents[0].text
        check("name: card-payment" in spec_text and "approval:" in spec_text,
              f"the spec reads as its text: {spec_text[:80]}")
        seen["spec_resource"] = "paygrid://specs/card-payment@3"

        got = await client.call_tool("get_workflow", {"workflow_id": workflow_id})
        check(not got.is_error and got.structured_content["status"] == "succeeded",
              "get_workflow agrees")

        bad = await client.call_tool("risk.score", {"amount_minor": "lots", "card_token": "tok_visa"})
        check(bad.is_error, "a bad argument is a tool error")
        check("amount_minor" in text_of(bad), f"the error names the field: {text_of(bad)}")
        seen["bad_argument_error"] = text_of(bad)

        keyless = await client.call_tool("gateway.capture", {"authorization_id": "auth_x"})
        check(keyless.is_error and "idempotency_key" in text_of(keyless),
              f"a money-moving call without a key is refused: {text_of(keyless)}")

        scored = await client.call_tool("risk.score", {"amount_minor": 1250, "currency": "EUR", "card_token": "tok_visa"})
        check(not scored.is_error and "decision" in scored.structured_content,
              f"risk.score runs as a tool: {text_of(scored)}")

        # A payment the risk check sends to review waits for a person's decision.
        review = await client.call_tool("submit_workflow", {
            "spec_ref": "card-payment@3",
            "input": {"amount_minor": 640000, "currency": "EUR", "card_token": "tok_review"},
            "idempotency_key": f"mcp-review-{label}",
        })
        check(not review.is_error, f"the review payment was submitted: {text_of(review)}")
        review_id = review.structured_content["workflow_id"]
        deadline = time.monotonic() + 60
        pending = None
        while time.monotonic() < deadline and pending is None:
            body = json.loads((await client.read_resource(f"paygrid://workflows/{review_id}")).contents[0].text)
            pending = next((t for t in body["tasks"] if t.get("approval", {}).get("pending")), None)
            if pending is None:
                await asyncio.sleep(0.1)
        check(pending is not None and pending["task_id"] == "review", f"the review waits: {body}")
        check("640000" in pending["approval"]["prompt"], f"it asks the question: {pending}")
        bad_decision = await client.call_tool("approve_task", {"workflow_id": review_id, "decision": "maybe", "decided_by": "mcp-check"})
        check(bad_decision.is_error and "decision" in text_of(bad_decision), f"a bad decision names the field: {text_of(bad_decision)}")
        approved = await client.call_tool("approve_task", {
            "workflow_id": review_id, "decision": "approve", "decided_by": "mcp-check", "note": "verified by phone"})
        check(not approved.is_error and approved.structured_content["task_id"] == "review", f"approved: {text_of(approved)}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = json.loads((await client.read_resource(f"paygrid://workflows/{review_id}")).contents[0].text)
            if body["status"] not in ("pending", "running", "compensating"):
                break
            await asyncio.sleep(0.1)
        check(body["status"] == "succeeded", f"the reviewed payment succeeded: {body['status']}")
        decided = next(t for t in body["tasks"] if t["task_id"] == "review")["output"]
        check(decided["decided_by"] == "mcp-check" and decided["via"] == "mcp", f"the decision is kept: {decided}")
        seen["reviewed"] = review_id

        # Operations: pause and resume a parked workflow, then a bulk cancel (dry run first).
        parked = await client.call_tool("submit_workflow", {
            "spec_text": "apiVersion: paygrid/v1\nkind: Workflow\nname: mcp-parked\nversion: 1\ntasks:\n  - id: wait\n    skill: nobody.offers\n",
            "labels": {"mcp-batch": label},
        })
        check(not parked.is_error, f"parked: {text_of(parked)}")
        parked_id = parked.structured_content["workflow_id"]
        paused = await client.call_tool("pause_workflow", {"workflow_id": parked_id, "reason": "asking the bank"})
        check(not paused.is_error and paused.structured_content["paused"] is True, f"paused: {text_of(paused)}")
        twice = await client.call_tool("pause_workflow", {"workflow_id": parked_id})
        check(twice.is_error and "paused already" in text_of(twice), f"pausing twice is refused: {text_of(twice)}")
        resumed = await client.call_tool("resume_workflow", {"workflow_id": parked_id})
        check(not resumed.is_error and resumed.structured_content["paused"] is False, f"resumed: {text_of(resumed)}")
        dry = await client.call_tool("bulk_operation", {"operation": "cancel", "labels": {"mcp-batch": label}})
        check(not dry.is_error and dry.structured_content["dry_run"] is True and dry.structured_content["matched"] == 1,
              f"a bulk operation counts first: {text_of(dry)}")
        done = await client.call_tool("bulk_operation", {"operation": "cancel", "labels": {"mcp-batch": label}, "dry_run": False})
        check(not done.is_error and done.structured_content["applied"] == 1, f"then applies: {text_of(done)}")
        seen["operations"] = ["pause", "resume", "bulk cancel"]
    print(json.dumps(seen))


def main():
    if sys.argv[1] == "stdio":
        # The stdio server is `paygrid mcp`, given the credentials as flags (the SDK
        # passes the child only a minimal environment).
        args = ["--control", sys.argv[3], "mcp"]
        if CERTS:
            args = ["--certs-dir", CERTS] + args
        if TOKEN:
            args = ["--token", TOKEN] + args
        server = StdioServerParameters(command=sys.argv[2], args=args)
        label = "stdio"
    else:
        url = sys.argv[1]
        label = url
        server = url
        if CERTS or TOKEN:
            verify = ssl.create_default_context(cafile=os.path.join(CERTS, "ca.crt")) if CERTS else True
            headers = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else None
            http = httpx2.AsyncClient(headers=headers, verify=verify,
                                      timeout=httpx2.Timeout(30.0, read=300.0))
            server = streamable_http_client(url, http_client=http)
    asyncio.run(run(server, label))


if __name__ == "__main__":
    main()
