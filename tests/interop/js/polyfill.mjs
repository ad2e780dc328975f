// Node 20 lacks Promise.withResolvers (Node >= 22 has it); Helia 7 and libp2p 3 call it.
// Load with: node --import ./polyfill.mjs <script>.mjs
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
