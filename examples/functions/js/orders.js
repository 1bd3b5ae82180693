// An order-confirming function for Switchyard, written with the official CloudEvents SDK for
// JavaScript (`npm install cloudevents`) and Node's http module. The same contract as
// ../python/orders.py (docs/sink-authors.md): 200 with a reply event, 204 for events that are
// not ours, 422 for an order without a numeric total (dead-lettered at once), 503 on the first
// attempt of a `"simulate": "flaky"` order (retried). PORT (default 8092; 0 picks one).
"use strict";
const http = require("node:http");
const { CloudEvent, HTTP } = require("cloudevents");

const failedOnce = new Set();

function answer(res, status, problem) {
  const body = problem ? JSON.stringify(problem) : "";
  res.writeHead(status, problem ? { "content-type": "application/json" } : {});
  res.end(body);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let event;
    try {
      event = HTTP.toEvent({ headers: req.headers, body: Buffer.concat(chunks).toString() });
    } catch (e) {
      return answer(res, 400, { error: `not a CloudEvent: ${e.message}` });
    }
    if (Array.isArray(event)) event = event[0];
    if (event.type !== "com.example.order.placed") return answer(res, 204);
    const data = typeof event.data === "object" && event.data !== null ? event.data : {};
    if (typeof data.total !== "number") {
      return answer(res, 422, { error: "data.total must be a number" });
    }
    const key = `${event.source} ${event.id}`;
    if (data.simulate === "flaky" && !failedOnce.has(key)) {
      failedOnce.add(key);
      return answer(res, 503, { error: "busy, try again" });
    }
    const attributes = {
      type: "com.example.order.confirmed",
      source: "/functions/orders/js",
      id: `${event.id}.confirmed`,
      datacontenttype: "application/json",
      data: { orderId: data.orderId ?? null, total: data.total },
    };
    if (data.orderId !== undefined) attributes.subject = String(data.orderId);
    const reply = HTTP.binary(new CloudEvent(attributes));
    res.writeHead(200, reply.headers);
    res.end(reply.body);
  });
});

server.listen(Number(process.env.PORT ?? 8092), "127.0.0.1", () => {
  console.log(`orders function listening on http://127.0.0.1:${server.address().port}/`);
});
