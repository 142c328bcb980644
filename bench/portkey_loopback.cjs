// Preloaded into Portkey's gateway (node --require): its server listens on every interface and
// has no option for the host, so a listen(port) without a host is bound to 127.0.0.1 (the
// benchmark stays on loopback). Nothing else of the gateway changes.
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const portOnly = typeof args[0] === "number" && typeof args[1] !== "string";
  if (portOnly) {
    args.splice(1, args[1] === undefined ? 1 : 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
