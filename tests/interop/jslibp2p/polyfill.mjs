// Node 20 lacks Promise.withResolvers (Node >= 22 has it); it-queue, pulled in by the libp2p 2.x
// line, calls it. peer.mjs imports this module first, so it runs before any libp2p code.
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers () {
      let resolve, reject
      const promise = new this((res, rej) => { resolve = res; reject = rej })
      return { promise, resolve, reject }
    }
  })
}
