// A js-libp2p 2.x peer for DRE interop tests (tests/interop/test_jslibp2p_interop.py).
//
//   node peer.mjs <network> <multiaddr-of-our-node> [lifetime-seconds]
//
// Listens on 127.0.0.1 (TCP, Noise, Yamux, identify, ping), runs gossipsub with content message
// ids (sha256 of the data, as dre.node.compat.content_message_id) and a server-mode kad-dht on
// DRE's private protocol /dre/<network>/kad/1.0.0, dials the given address and subscribes to
// dre/<network>/announce. Prints one JSON object per line on stdout:
//
//   {"event":"ready","peerId":..., "addrs":[...]}       after the dial succeeded
//   {"event":"routing","peerId":...}                   a peer entered the DHT routing table
//   {"event":"message","topic":...,"from":...,"dataHex":...}   each gossip message received
//   {"event":"providers","cid":...,"peers":[...],"error":null|"..."}   answer to `find <cid>`
//   {"event":"error","error":...}                      fatal; exit code 1
//
// Reads commands from stdin, one a line: `find <cid>` (findProviders on the DHT, bounded by
// FIND_TIMEOUT_MS). Exits when stdin closes, or after lifetime-seconds (default 120) at most.
import './polyfill.mjs'
import { createHash } from 'node:crypto'
import { createInterface } from 'node:readline'
import { gossipsub } from '@chainsafe/libp2p-gossipsub'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { kadDHT } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { CID } from 'multiformats/cid'

const DIAL_TIMEOUT_MS = 10_000
const FIND_TIMEOUT_MS = 10_000
const STOP_TIMEOUT_MS = 3_000

const [network, target, lifetimeArg] = process.argv.slice(2)
if (!network || !target) {
  process.stderr.write('usage: node peer.mjs <network> <multiaddr> [lifetime-seconds]\n')
  process.exit(2)
}
const lifetimeMs = Number(lifetimeArg ?? 120) * 1000
const topic = `dre/${network}/announce`

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

const sha256 = (data) => new Uint8Array(createHash('sha256').update(data).digest())

let node
let stopping = false

async function shutdown (code) {
  if (stopping) return
  stopping = true
  const force = setTimeout(() => process.exit(code), STOP_TIMEOUT_MS)
  force.unref()
  try {
    if (node != null) await node.stop()
  } catch (err) {
    process.stderr.write(`stop failed: ${err?.stack ?? err}\n`)
  }
  // Let stdout drain before exiting.
  process.stdout.write('', () => process.exit(code))
}

async function fail (err) {
  emit({ event: 'error', error: String(err?.message ?? err) })
  process.stderr.write(`${err?.stack ?? err}\n`)
  await shutdown(1)
}

process.on('unhandledRejection', (err) => { process.stderr.write(`unhandled: ${err?.stack ?? err}\n`) })
setTimeout(() => {
  process.stderr.write(`lifetime of ${lifetimeMs} ms is over\n`)
  shutdown(3)
}, lifetimeMs).unref()

async function find (cidText) {
  const peers = new Set()
  let error = null
  try {
    const cid = CID.parse(cidText)
    for await (const event of node.services.dht.findProviders(cid, {
      signal: AbortSignal.timeout(FIND_TIMEOUT_MS)
    })) {
      if (event.name === 'PROVIDER') {
        for (const provider of event.providers) peers.add(provider.id.toString())
      }
    }
  } catch (err) {
    // A timeout after providers were found is still an answer; report it anyway.
    error = String(err?.message ?? err)
  }
  emit({ event: 'providers', cid: cidText, peers: [...peers], error })
}

async function main () {
  node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        msgIdFn: (msg) => sha256(msg.data),
        emitSelf: false,
        allowPublishToZeroTopicPeers: true
      }),
      dht: kadDHT({
        protocol: `/dre/${network}/kad/1.0.0`,
        clientMode: false,
        // The default mapper drops private (here: loopback) addresses of the peers it learns.
        peerInfoMapper: (peer) => peer
      })
    }
  })

  node.services.dht.routingTable.addEventListener('peer:add', (evt) => {
    emit({ event: 'routing', peerId: evt.detail.toString() })
  })
  node.services.pubsub.addEventListener('message', (evt) => {
    const msg = evt.detail
    emit({
      event: 'message',
      topic: msg.topic,
      from: msg.type === 'signed' ? msg.from.toString() : null,
      dataHex: Buffer.from(msg.data).toString('hex')
    })
  })
  node.services.pubsub.subscribe(topic)

  await node.dial(multiaddr(target), { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) })
  emit({
    event: 'ready',
    peerId: node.peerId.toString(),
    addrs: node.getMultiaddrs().map((ma) => ma.toString())
  })

  const lines = createInterface({ input: process.stdin })
  lines.on('line', (line) => {
    const [command, arg] = line.trim().split(/\s+/)
    if (command === 'find' && arg) {
      find(arg).catch(fail)
    } else if (command) {
      emit({ event: 'error', error: `unknown command: ${line.trim()}` })
    }
  })
  lines.on('close', () => { shutdown(0) })
}

main().catch(fail)
