/* The demo shop's own script (streams/browser/shop.py inlines it after `var PAGE = {...}`): the cart
 * in localStorage and the Segment-spec calls each page makes through window.tessera. */
window.tessera = window.tessera || [];
function call() { var a = [].slice.call(arguments); Array.isArray(tessera) ? tessera.push(a) : tessera[a[0]].apply(null, a.slice(1)); }
function cart() { try { return JSON.parse(localStorage.getItem("shop_cart")) || []; } catch (e) { return []; } }
function saveCart(c) { localStorage.setItem("shop_cart", JSON.stringify(c)); var n = document.getElementById("cart-count"); if (n) n.textContent = c.reduce(function (s, l) { return s + l.quantity; }, 0); }
function total(c) { return Math.round(c.reduce(function (s, l) { return s + l.price * l.quantity; }, 0) * 100) / 100; }
call("page", document.title, { page_type: PAGE.type });
if (PAGE.type === "category") call("track", "Product List Viewed", { category: PAGE.category, products: PAGE.products });
if (PAGE.type === "product") call("track", "Product Viewed", PAGE.product);
document.addEventListener("DOMContentLoaded", function () {
  saveCart(cart());
  var add = document.getElementById("add-to-cart");
  if (add) add.addEventListener("click", function () {
    var c = cart(), p = PAGE.product, line = c.filter(function (l) { return l.product_id === p.product_id; })[0];
    if (line) line.quantity += 1; else c.push({ product_id: p.product_id, name: p.name, category: p.category, price: p.price, quantity: 1 });
    saveCart(c);
    call("track", "Product Added", { product_id: p.product_id, name: p.name, category: p.category, price: p.price, quantity: 1, currency: "EUR" });
    document.getElementById("added").textContent = "Added to your cart.";
  });
  if (PAGE.type !== "cart") return;
  var c = cart(), list = document.getElementById("lines");
  c.forEach(function (l) { var li = document.createElement("li"); li.textContent = l.quantity + " × " + l.name + " — " + (l.price * l.quantity).toFixed(2) + " EUR"; list.appendChild(li); });
  document.getElementById("total").textContent = total(c).toFixed(2);
  call("track", "Cart Viewed", { products: c });
  var coupon = "";
  document.getElementById("apply-coupon").addEventListener("click", function () {
    coupon = document.getElementById("coupon").value.trim();
    if (coupon) call("track", "Coupon Applied", { coupon_name: coupon, discount: Math.round(total(cart()) * 10) / 100 });
    document.getElementById("coupon-state").textContent = coupon ? "Coupon " + coupon + " applied: 10 % off." : "";
  });
  document.getElementById("place-order").addEventListener("click", function () {
    var c = cart(); if (!c.length) return;
    var sum = total(c), paid = coupon ? Math.round(sum * 90) / 100 : sum;
    call("track", "Order Completed", { order_id: "O-" + Date.now().toString(36), total: paid, revenue: paid, currency: "EUR", coupon: coupon || undefined, products: c });
    call("flush");
    saveCart([]);
    document.getElementById("order-state").textContent = "Thank you for your order.";
  });
});
