export interface SetupOptions { configFile: string | undefined; noBrowser: boolean; open: boolean }
export async function runSetup(_options: SetupOptions): Promise<number> { return 1; }
