// Sends identify, page and e-commerce track calls through the official Segment Node SDK
// (@segment/analytics-node) to the collector at TESSERA_HOST, changing only `host` (and the write
// key). Prints one JSON line per HTTP answer the SDK got, then {"done": true}; exits 1 on an error.
// Used by tests/e2e/test_websites.py.
import { Analytics } from "@segment/analytics-node";

const host = process.env.TESSERA_HOST;
const writeKey = process.env.TESSERA_WRITE_KEY;
const anonymousId = process.env.VISITOR_ID;
const userId = process.env.USER_ID;

const analytics = new Analytics({ writeKey, host, maxRetries: 2, flushInterval: 200 });
let failed = false;
analytics.on("http_response", (r) => {
  console.log(JSON.stringify({ status: r.status, url: r.url }));
  if (r.status >= 300) failed = true;
});
analytics.on("error", (err) => {
  console.log(JSON.stringify({ error: String(err.reason || err.message || err) }));
  failed = true;
});

const product = { product_id: "P-1001", sku: "HP-1001", category: "electronics", name: "Headphones", price: 249.0, currency: "EUR" };
const context = { ip: "178.197.224.1", userAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36" };

analytics.identify({ anonymousId, userId, traits: { age: 27, gender: "f", plan: "gold" }, context });
analytics.page({ anonymousId, userId, name: "Headphones", properties: { page_type: "product", url: "https://shop.example/p/P-1001", path: "/p/P-1001" }, context });
analytics.track({ anonymousId, userId, event: "Product Viewed", properties: product, context });
analytics.track({ anonymousId, userId, event: "Product Added", properties: { ...product, quantity: 2 }, context });
analytics.track({
  anonymousId, userId, event: "Order Completed", context,
  properties: {
    order_id: "ORD-" + anonymousId, total: 448.2, revenue: 448.2, discount: 49.8, coupon: "WELCOME10", currency: "EUR",
    products: [{ ...product, quantity: 2, coupon: "WELCOME10" }],
  },
});
await analytics.closeAndFlush({ timeout: 30000 });
console.log(JSON.stringify({ done: true }));
process.exit(failed ? 1 : 0);
