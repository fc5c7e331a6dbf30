"""An A2A client nobody at Paygrid wrote (the A2A project's Python SDK, `a2a-sdk[grpc]`
>= 1.3) against Paygrid: finds the gRPC interface through the agent card, sends a message
that starts a card payment, follows it with SubscribeToTask to COMPLETED, cancels
another one, and answers a payment the risk check sent to review (INPUT_REQUIRED) with an
approval message, after which it completes. Prints one JSON line; exits non-zero on a
failed check.

    python a2a_check.py http://HTTP_ADDR
    python a2a_check.py --door http://HTTP_ADDR TASK_ID

The second form is for a cluster (docs/cluster.md): through the member at HTTP_ADDR, it
follows and cancels TASK_ID, a task another member owns.

With TLS and tokens on (as Paygrid runs by default), PAYGRID_CERTS_DIR names the
directory holding the CA (ca.crt) to trust and PAYGRID_TOKEN the bearer token to send.
"""

import asyncio
import json
import os
import ssl
import sys
import uuid

import grpc
import httpx
from google.protobuf import json_format, struct_pb2

from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as pb


def check(condition, message):
    if not condition:
        raise SystemExit(f"check failed: {message}")


def data_message(payload):
    value = struct_pb2.Value()
    json_format.ParseDict(payload, value)
    return pb.Message(message_id=str(uuid.uuid4()), role=pb.ROLE_USER, parts=[pb.Part(data=value)])


async def run(base, door_task=None):
    seen = {}
    certs, token = os.environ.get("PAYGRID_CERTS_DIR"), os.environ.get("PAYGRID_TOKEN")

    def channel(url):
        target = url.removeprefix("https://").removeprefix("http://")
        if not certs:
            return grpc.aio.insecure_channel(target)
        with open(os.path.join(certs, "ca.crt"), "rb") as ca:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())
        if token:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token))
        return grpc.aio.secure_channel(target, credentials)

    http = None
    if certs:
        http = httpx.AsyncClient(verify=ssl.create_default_context(cafile=os.path.join(certs, "ca.crt")))
    config = ClientConfig(
        streaming=True,
        supported_protocol_bindings=["GRPC"],
        grpc_channel_factory=channel,
        httpx_client=http,
    )
    client = await create_client(base, client_config=config)
    if door_task:
        await through_a_door(client, door_task, seen)
        print(json.dumps(seen))
        return
    payment = {"spec_ref": "card-payment@3", "input": {"amount_minor": 1250, "currency": "EUR", "card_token": "tok_visa"}}
    request = pb.SendMessageRequest(message=data_message(payment),
                                    configuration=pb.SendMessageConfiguration(return_immediately=True))
    task = None
    # Streaming (SendStreamingMessage): the first event is the task; then follow it with
    # SubscribeToTask instead.
    async for event in client.send_message(request):
        if event.HasField("task"):
            task = event.task
            break
    check(task is not None and task.id, f"SendMessage answered a task: {task}")
    seen["task_id"] = task.id
    states = []
    try:
        async for event in client.subscribe(pb.SubscribeToTaskRequest(id=task.id)):
            if event.HasField("status_update"):
                states.append(pb.TaskState.Name(event.status_update.status.state))
            elif event.HasField("task"):
                states.append(pb.TaskState.Name(event.task.status.state))
    except Exception as error:  # the task may have ended before the subscription
        seen["subscribe_error"] = str(error)
    final = await client.get_task(pb.GetTaskRequest(id=task.id))
    check(final.status.state == pb.TASK_STATE_COMPLETED, f"the payment completed: {final.status} after {states} {seen}")
    check(len(final.artifacts) == 1, "its outputs are an artifact")
    seen["states"] = states

    parked = None
    async for event in client.send_message(pb.SendMessageRequest(
            message=data_message({"spec_text": "apiVersion: paygrid/v1\nkind: Workflow\nname: a2a-parked\nversion: 1\ntasks:\n  - id: wait\n    skill: nobody.offers\n"}),
            configuration=pb.SendMessageConfiguration(return_immediately=True))):
        if event.HasField("task"):
            parked = event.task
            break
    check(parked is not None, "the second message answered a task")
    cancelled = await client.cancel_task(pb.CancelTaskRequest(id=parked.id))
    check(cancelled.status.state == pb.TASK_STATE_CANCELED, f"cancelled: {cancelled.status}")
    seen["cancelled"] = cancelled.id

    # A payment over the review threshold: the task stops at INPUT_REQUIRED, asking.
    review = {"spec_ref": "card-payment@3", "input": {"amount_minor": 750000, "currency": "EUR", "card_token": "tok_review"}}
    reviewed, review_states = None, []
    async for event in client.send_message(pb.SendMessageRequest(message=data_message(review))):
        if event.HasField("task"):
            reviewed = event.task
            review_states.append(pb.TaskState.Name(event.task.status.state))
        elif event.HasField("status_update"):
            review_states.append(pb.TaskState.Name(event.status_update.status.state))
        if review_states and review_states[-1] == "TASK_STATE_INPUT_REQUIRED":
            break
    check(reviewed is not None, "the review payment answered a task")
    waiting = await client.get_task(pb.GetTaskRequest(id=reviewed.id))
    check(waiting.status.state == pb.TASK_STATE_INPUT_REQUIRED, f"it needs input: {waiting.status} after {review_states}")
    question = waiting.status.message.parts[0].text
    check("review" in question and "750000" in question, f"the status message asks the question: {question}")
    # The answer: a message to that task, in its context.
    answer = data_message({"decision": "approve", "note": "known customer", "decided_by": "a2a-check"})
    answer.task_id = reviewed.id
    answer.context_id = waiting.context_id
    async for event in client.send_message(pb.SendMessageRequest(message=answer)):
        if event.HasField("task"):
            review_states.append(pb.TaskState.Name(event.task.status.state))
        elif event.HasField("status_update"):
            review_states.append(pb.TaskState.Name(event.status_update.status.state))
    done = await client.get_task(pb.GetTaskRequest(id=reviewed.id))
    check(done.status.state == pb.TASK_STATE_COMPLETED, f"approved, it completed: {done.status} after {review_states}")
    outputs = json_format.MessageToDict(done.artifacts[0].parts[0].data)
    check(outputs["review"]["decision"] == "approve" and outputs["review"]["decided_by"] == "a2a-check",
          f"the decision is in the outputs: {outputs.get('review')}")
    seen["reviewed"] = reviewed.id
    seen["review_states"] = review_states
    seen["question"] = question
    print(json.dumps(seen))


async def through_a_door(client, task_id, seen):
    """Follows and cancels a task owned by another member than the one called."""
    task = await client.get_task(pb.GetTaskRequest(id=task_id))
    check(task.status.state == pb.TASK_STATE_WORKING, f"the parked task works: {task.status}")
    states = []

    async def follow():
        async for event in client.subscribe(pb.SubscribeToTaskRequest(id=task_id)):
            if event.HasField("status_update"):
                states.append(pb.TaskState.Name(event.status_update.status.state))
            elif event.HasField("task"):
                states.append(pb.TaskState.Name(event.task.status.state))
            if len(states) == 1:
                subscribed.set()

    subscribed = asyncio.Event()
    follower = asyncio.create_task(follow())
    await asyncio.wait_for(subscribed.wait(), 30)
    cancelled = await client.cancel_task(pb.CancelTaskRequest(id=task_id))
    check(cancelled.status.state == pb.TASK_STATE_CANCELED, f"cancelled: {cancelled.status}")
    await asyncio.wait_for(follower, 30)
    check(states[-1] == "TASK_STATE_CANCELED", f"the subscription saw it end: {states}")
    seen["door_states"] = states


if __name__ == "__main__":
    if sys.argv[1] == "--door":
        asyncio.run(run(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(run(sys.argv[1]))
