// The relay most users would write in Node: the `ws` package, one process, one thread.
// Every message goes to the other connections of the same document (last path segment).
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 9002);
const docs = new Map();
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });

wss.on('connection', (ws, req) => {
  const doc = req.url.split('?')[0].split('/').pop();
  let members = docs.get(doc);
  if (!members) {
    members = new Set();
    docs.set(doc, members);
  }
  members.add(ws);
  ws.on('message', (data, isBinary) => {
    for (const other of members) {
      if (other !== ws && other.readyState === 1) other.send(data, { binary: isBinary });
    }
  });
  ws.on('close', () => {
    members.delete(ws);
    if (members.size === 0) docs.delete(doc);
  });
});
wss.on('listening', () => console.error(`node ws relay listening on 127.0.0.1:${port}`));
