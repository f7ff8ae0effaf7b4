// A Node worker on recluster's message socket, as the README shows it: it reads one JSON object
// per line, answers `{"ping": N}` with `{"pong": N}` to the sender, and prints what it receives.
const net = require('net');
const readline = require('readline');

const id = process.env.WORKER_ID;
// One write per line: two workers share the pipe, and a line must not be cut by another's.
const say = (text) => process.stdout.write(`${text}\n`);
const bus = new net.Socket({ fd: Number(process.env.RECLUSTER_MSG_FD) });
const send = (to, data) => bus.write(JSON.stringify({ to, data }) + '\n');

readline.createInterface({ input: bus }).on('line', (line) => {
  const message = JSON.parse(line);
  say(`node id=${id} got=${JSON.stringify(message)}`);
  if (message.data && message.data.ping !== undefined) {
    send(`worker:${message.from.id}`, { pong: message.data.ping });
  }
});
process.on('SIGUSR1', () => send('others', { ping: Number(id) }));
process.on('SIGTERM', () => process.exit(0));
say(`ready id=${id} pid=${process.pid}`);
