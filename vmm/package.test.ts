// Packs the project as npm would publish it, installs the tarball into an empty project, and runs a
// small VM with a device task there, importing only the package's public entry points: what a user
// of the package gets, end to end (the bin included).

import test from 'ava';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const REPO = path.resolve(__dirname, '..');
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

const GUEST = `// Guest code of the test project: a store and a load through the device, then the value on port 0x80.
const { cpu } = require('ioregionfd-emu/guest');
exports.guest_code = () => {
  cpu().write(0xd0000000n, 8, 0x1122334455667788n);
  cpu().outPort(0x80, 4, Number(cpu().read(0xd0000000n, 8) & 0xffffffffn));
};
`;

const MAIN = `// A VMM using the package: a VM, a vCPU running ./guest, a testdev device task behind KVM_SET_IOREGION.
const { Kvm, spawnDeviceTask, KVM_CAP_IOREGIONFD } = require('ioregionfd-emu');
const { runDeviceTask, RegisterSpace } = require('ioregionfd-emu/device');
const { encodeCmd, IOREGIONFD_MSG_SIZE } = require('ioregionfd-emu/wire');
const { guest_code } = require('./guest');

async function main() {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  vm.addMemory(0, 0n, 0x10000);
  const vcpu = vm.createVcpu(0);
  vcpu.setEntry(guest_code);
  const dev = spawnDeviceTask({ device: 'testdev', vm, regions: [{ guest_paddr: 0xd0000000n, memory_size: 8n }] });
  dev.closeChannelFds();
  const exit = vcpu.run();
  const stats = vm.ioregionStats()[0];
  vm.close();
  const status = await dev.stop();
  kvm.close();
  console.log(JSON.stringify({
    exit: exit.reason, port: exit.port, value: Buffer.from(exit.data).readUInt32LE(0).toString(16),
    reads: String(stats.reads), writes: String(stats.writes), device: status.code,
    sdk: typeof runDeviceTask === 'function' && typeof RegisterSpace === 'function', wire: typeof encodeCmd === 'function' && IOREGIONFD_MSG_SIZE,
    capNumber: KVM_CAP_IOREGIONFD,
  }));
}
main().catch((e) => { console.error(e); process.exit(1); });
`;

test('the packed tarball installs into an empty project, whose VMM runs a VM with a device task through the public entry points', async (t) => {
  t.timeout(240_000);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ioregionfd-emu-pack-'));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
  // dist/ is built by `npm test` before ava runs; pack it as it is.
  const packed = execFileSync(NPM, ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], { cwd: REPO, encoding: 'utf8' });
  const info = JSON.parse(packed) as { filename: string; files: { path: string }[] }[];
  const files = info[0].files.map((f) => f.path);
  t.true(files.includes('dist/vmm/index.d.ts') && files.includes('dist/kernel-model/main.js') && files.includes('dist/proto/kvm.proto'));
  t.false(files.some((f) => /\.test\.(js|d\.ts)/.test(f)), 'no unit tests in the package');

  const app = path.join(tmp, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, version: '1.0.0' }));
  execFileSync(NPM, ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(tmp, info[0].filename)], { cwd: app, stdio: 'pipe' });
  fs.writeFileSync(path.join(app, 'guest.js'), GUEST);
  fs.writeFileSync(path.join(app, 'main.js'), MAIN);

  const out = execFileSync(process.execPath, ['main.js'], { cwd: app, encoding: 'utf8', timeout: 60_000 });
  const r = JSON.parse(out.trim().split('\n').pop()!);
  t.like(r, { exit: 'io', port: 0x80, value: '55667788', reads: '1', writes: '1', device: 0, sdk: true, wire: 32, capNumber: 191 });

  const bin = path.join(app, 'node_modules', '.bin', 'ioregionfd-emu');
  t.regex(execFileSync(bin, ['--help'], { encoding: 'utf8' }), /Commands:[\s\S]*selftests[\s\S]*bench[\s\S]*devices[\s\S]*device-task/);
  t.regex(execFileSync(bin, ['devices'], { encoding: 'utf8' }), /^testdev\n/m);
  t.regex(execFileSync(bin, ['selftests', '-l'], { encoding: 'utf8' }), /^kvm:ioregionfd_test$/m);
});
