import type { Config } from 'jest';
import { readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';

// One Jest project per package under packages/. `@edgecore/<pkg>` imports resolve to the sibling
// package's src/ so tests never depend on a stale dist/.
const root = __dirname;
const packages = readdirSync(join(root, 'packages')).filter((p) =>
  existsSync(join(root, 'packages', p, 'package.json')),
);

const moduleNameMapper: Record<string, string> = {};
for (const p of packages) {
  moduleNameMapper[`^@edgecore/${p}$`] = `<rootDir>/../${p}/src/index.ts`;
  // a package's client entry point (`@edgecore/metamanager/client`)
  moduleNameMapper[`^@edgecore/${p}/client$`] = `<rootDir>/../${p}/src/client/index.ts`;
}
// the splice engine as a joiner (`@edgecore/edgemesh-module/kernel-joiner`, used by the relay)
moduleNameMapper['^@edgecore/edgemesh-module/kernel-joiner$'] =
  '<rootDir>/../edgemesh-module/src/proxy/l4/kernel-joiner.ts';
// the native TLS pump (`@edgecore/edgemesh-module/tls-pump`, used by a node's tunnel agent)
moduleNameMapper['^@edgecore/edgemesh-module/tls-pump$'] =
  '<rootDir>/../edgemesh-module/src/proxy/l4/tls-pump.ts';

const config: Config = {
  testTimeout: 30000,
  projects: packages.map((p) => ({
    displayName: p,
    rootDir: join(root, 'packages', p),
    testEnvironment: 'node',
    testMatch: ['<rootDir>/test/**/*.test.ts'],
    setupFiles: ['reflect-metadata'],
    moduleNameMapper,
    transform: {
      '^.+\\.ts$': ['ts-jest', { tsconfig: join(root, 'packages', p, 'tsconfig.json') }],
    },
  })),
};

export default config;
